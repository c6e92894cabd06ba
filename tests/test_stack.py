"""`wsss stack` for real, and the faults of a production stack: one stack (PostgreSQL, Prefect
and MLflow servers on it, a Dask scheduler with two workers, a Prefect process worker) shared by
the tests of this module, every command run as a user runs it (`python -m cli ...` with the
environment `stack up` printed).

PostgreSQL is Debian's `postgresql` package (.ci/run installs it). Without it these tests are
skipped, unless WSSS_REQUIRE_POSTGRES is set (CI sets it): then they fail.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from wsss_core.store import Workspace

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRED = bool(os.environ.get("WSSS_REQUIRE_POSTGRES"))
COMMAND_TIMEOUT_S = 300
CRASH_AFTER_S = 60  # two heartbeats (30 s, Prefect's shortest): a busy machine may delay one
GRAPHNET = ("graphnet", "--preset", "offline", "--set", "gcn.pretrain_epochs=10", "--no-evaluate", "--no-progress")
GRAPHNET_OUTPUTS = ("superpixels", "graphs", "nodes/gcn-scribbles", "pseudo/gcn-scribbles")

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _require_postgres() -> None:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        if REQUIRED:
            pytest.fail("WSSS_REQUIRE_POSTGRES is set but PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("no PostgreSQL (apt-get install postgresql; CI sets WSSS_REQUIRE_POSTGRES so it never skips)")


def wsss(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`wsss ARGS` in a fresh process, with the stack's environment when given."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DASK_"))}
    full.update(env or {})
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], env=full, cwd=cwd or REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def started(*args: str, env: dict[str, str]) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DASK_"))}
    full.update(env, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, "-m", "cli", *map(str, args)], env=full, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def exports(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        assert line.startswith("export "), line  # stdout is for eval: nothing else
        name, _, value = line.removeprefix("export ").partition("=")
        found[name] = value
    return found


class Stack:
    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory, self.env = directory, env

    def up(self) -> subprocess.CompletedProcess:
        return ok(wsss("stack", "up", "--dir", self.directory, "--dask-workers", "2", "--crash-after", str(CRASH_AFTER_S)))

    def state(self) -> dict:
        return json.loads((self.directory / "stack.json").read_text())

    def client(self):
        from distributed import Client

        return Client(self.env["DASK_SCHEDULER_ADDRESS"], timeout=30)

    def mlflow_runs(self, workspace: Path) -> list:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.env["MLFLOW_TRACKING_URI"])
        experiment = client.get_experiment_by_name("wsss")
        if experiment is None:
            return []
        return client.search_runs([experiment.experiment_id], f"tags.workspace = '{workspace.resolve()}'")

    def prefect(self):
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.env["PREFECT_API_URL"])


@pytest.fixture(scope="module")
def stack():
    """`wsss stack up` in a folder PostgreSQL's user may reach (pytest's own tmp is closed to it)."""
    _require_postgres()
    directory = Path(tempfile.mkdtemp(prefix="wsss-stack-", dir="/tmp"))
    directory.chmod(0o711)
    result = wsss("stack", "up", "--dir", directory, "--dask-workers", "2", "--crash-after", str(CRASH_AFTER_S))
    try:
        ok(result)
        yield Stack(directory, exports(result.stdout))
    finally:
        wsss("stack", "down", "--dir", directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two tiny generated datasets: `small` for GraphNet, `large` (full-size images) for
    superpixel batches long enough to be caught in the middle."""
    root = tmp_path_factory.mktemp("stack-data")
    ok(wsss("generate", "--out", root / "small", "--images", "10", "--width", "96", "--height", "64", "--seed", "3"))
    ok(wsss("generate", "--out", root / "large", "--images", "12", "--seed", "4"))
    return root


@pytest.fixture(scope="module")
def reference(datasets, tmp_path_factory):
    """GraphNet and superpixels without the stack and without faults: threads, no MLflow."""
    root = tmp_path_factory.mktemp("stack-reference")
    for name in ("small", "large"):  # on the tests' shared local Prefect server
        ok(wsss("ingest", "--root", datasets / name, "--workspace", root / name, "--no-progress"))
    ok(wsss(*GRAPHNET, "--workspace", root / "small", "--no-mlflow"))
    ok(wsss("superpixels", "--workspace", root / "large", "--no-progress"))
    return root


def assert_same_arrays(workspace: Path, reference: Path, stages) -> None:
    got, expected = Workspace(workspace), Workspace(reference)
    ids = expected.image_ids()
    assert got.image_ids() == ids and ids
    for stage in stages:
        assert got.done_ids(stage) == set(ids), stage
        for image_id in ids:
            names = ("node_features", "edges", "weights") if stage == "graphs" else (None,)
            for name in names:
                a, b = got.read_array(stage, image_id, name), expected.read_array(stage, image_id, name)
                assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), (stage, image_id, name)


def executed(stack: Stack) -> int:
    with stack.client() as client:
        return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


# ----------------------------------------------------------------------------- the stack


def test_up_starts_every_service_on_loopback_and_up_again_restarts_only_what_is_down(stack):
    from wsss_core.stack import stack_listeners, status, stop_service

    assert set(stack.env) == {"PREFECT_API_URL", "MLFLOW_TRACKING_URI", "DASK_SCHEDULER_ADDRESS"}
    services = {s["name"]: s for s in status(stack.directory)}
    assert list(services) == ["postgres", "prefect-server", "mlflow-server", "dask-scheduler",
                              "dask-worker-0", "dask-worker-1", "prefect-worker"]
    assert all(s["up"] for s in services.values()), services
    shown = ok(wsss("stack", "status", "--dir", stack.directory)).stdout
    assert shown.count(" up ") == 7, shown

    # every listener of every process the stack started is on the loopback interface
    found = stack_listeners(stack.directory)
    assert {address for _, address, _ in found} == {"127.0.0.1"}, found
    ports = {port for _, _, port in found}
    assert set(stack.state()["ports"].values()) <= ports, (stack.state()["ports"], ports)
    with urllib.request.urlopen(f"{stack.env['MLFLOW_TRACKING_URI']}/health", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{stack.env['PREFECT_API_URL']}/health", timeout=10) as response:
        assert response.status == 200

    # up again: what runs is left alone, what is down starts on its recorded address
    running = {name: s["pid"] for name, s in services.items()}
    stop_service(stack.directory, "dask-worker-1")
    assert not {s["name"]: s["up"] for s in status(stack.directory)}["dask-worker-1"]
    again = stack.up()
    assert exports(again.stdout) == stack.env
    assert "dask-worker-1: starting" in again.stderr and "postgres: already up" in again.stderr, again.stderr
    after = {s["name"]: s for s in status(stack.directory)}
    assert all(s["up"] for s in after.values())
    assert {n: s["pid"] for n, s in after.items() if n != "dask-worker-1"} == {n: p for n, p in running.items() if n != "dask-worker-1"}


@pytest.fixture(scope="module")
def on_the_stack(stack, datasets, tmp_path_factory):
    """A workspace made on the stack (ingest, GraphNet); how many batches the Dask workers ran for it."""
    workspace = tmp_path_factory.mktemp("on-the-stack") / "ws"
    before = executed(stack)
    ok(wsss("ingest", "--root", datasets / "small", "--workspace", workspace, "--no-progress", env=stack.env))
    ok(wsss(*GRAPHNET, "--workspace", workspace, env=stack.env))
    return workspace, executed(stack) - before


def test_commands_run_on_the_stacks_dask_workers_and_log_to_its_mlflow_server(stack, on_the_stack, reference, tmp_path):
    workspace, batches = on_the_stack
    assert batches > 0  # DASK_SCHEDULER_ADDRESS: the batches ran on the stack's workers
    assert_same_arrays(workspace, reference / "small", GRAPHNET_OUTPUTS)
    assert not (workspace / "mlflow.db").exists() and not (workspace / "mlartifacts").exists()
    runs = stack.mlflow_runs(workspace)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parents and nested, [(r.info.run_name, r.data.tags.get("mlflow.parentRunId")) for r in runs]
    assert {r.info.status for r in runs} == {"FINISHED"}
    # the flow runs are on the stack's Prefect server (its PostgreSQL database)
    with stack.prefect() as client:
        assert any(run.state and run.state.is_completed() for run in client.read_flow_runs())

    # an engine named in the request wins over the environment (new settings: every image computed)
    copy = tmp_path / "copy"
    shutil.copytree(workspace, copy)
    before = executed(stack)
    recomputed = ok(wsss("superpixels", "--workspace", copy, "--engine", "threads", "--compactness", "20",
                         "--no-progress", env=stack.env))
    assert "0 already done" in recomputed.stderr and executed(stack) == before, recomputed.stderr
    # `wsss report` reads the workspace's runs from the server
    ok(wsss("report", "--workspace", workspace, env=stack.env))
    page = (workspace / "reports" / "report.html").read_text()
    assert stack.env["MLFLOW_TRACKING_URI"] in page and "gcn" in page


def _busy_worker(client, prefix: str) -> str | None:
    for worker, keys in client.processing().items():
        if any(str(key).startswith(prefix) for key in keys):
            return worker
    return None


def test_a_dask_worker_killed_mid_batch_loses_no_image(stack, datasets, reference, tmp_path):
    """SIGKILL to the worker process running a batch: the run completes, or ends with failure
    records that `wsss retry-failed` redoes; the arrays are the fault-free run's, byte for byte."""
    workspace = tmp_path / "ws"
    ok(wsss("ingest", "--root", datasets / "large", "--workspace", workspace, "--no-progress", env=stack.env))
    with stack.client() as client:
        pids = client.run(os.getpid)
        command = started("superpixels", "--workspace", workspace, "--batch-size", "3", "--no-progress", env=stack.env)
        victim, deadline = None, time.monotonic() + 120
        while victim is None and command.poll() is None and time.monotonic() < deadline:
            victim = _busy_worker(client, "superpixels")
            time.sleep(0.01)
        assert victim is not None, f"no batch was seen running\n{command.communicate()[0][-3000:]}"
        os.kill(pids[victim], signal.SIGKILL)
        output = command.communicate(timeout=COMMAND_TIMEOUT_S)[0]
        client.wait_for_workers(2, timeout=60)  # the nanny starts a new worker
    assert command.returncode in (0, 1), output[-3000:]
    if command.returncode == 1:
        ok(wsss("retry-failed", "--workspace", workspace, "--no-progress", env=stack.env))
    assert_same_arrays(workspace, reference / "large", ("superpixels",))
    assert not Workspace(workspace).failures("superpixels")


def test_the_mlflow_server_restarted_mid_run_loses_no_training(stack, datasets, reference, tmp_path):
    from wsss_core.stack import stop_service

    workspace = tmp_path / "ws"
    ok(wsss("ingest", "--root", datasets / "small", "--workspace", workspace, "--no-progress", env=stack.env))
    evaluated = [a for a in GRAPHNET if a != "--no-evaluate"]  # evaluation runs carry metrics
    command = started(*evaluated, "--workspace", workspace, env=stack.env)
    deadline = time.monotonic() + 120
    while not stack.mlflow_runs(workspace) and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    stop_service(stack.directory, "mlflow-server")
    time.sleep(2)
    stack.up()
    output = command.communicate(timeout=COMMAND_TIMEOUT_S)[0]
    if command.returncode != 0:  # the same command again finishes what is missing
        ok(wsss(*evaluated, "--workspace", workspace, env=stack.env))
    assert_same_arrays(workspace, reference / "small", GRAPHNET_OUTPUTS)
    import mlflow

    runs = stack.mlflow_runs(workspace)
    shown = (output[-2000:], [(r.info.run_name, r.info.status, r.data.tags.get("kind")) for r in runs])
    trainings = [r for r in runs if r.data.tags.get("kind") == "training" and r.info.status == "FINISHED"]
    evaluations = [r for r in runs if r.data.tags.get("kind") == "evaluation" and r.info.status == "FINISHED"]
    assert trainings and evaluations, shown
    client = mlflow.MlflowClient(tracking_uri=stack.env["MLFLOW_TRACKING_URI"])
    assert all(client.list_artifacts(r.info.run_id, "model") for r in trainings), shown  # the model reached the artifact store
    assert {"gcn-scribbles", "nearest-scribbles"} <= {r.data.params.get("method") for r in evaluations if "miou" in r.data.metrics}, shown


def test_postgresql_restarted_between_runs_loses_nothing(stack, on_the_stack):
    from wsss_core.stack import stop_service

    workspace, _ = on_the_stack
    runs_before = {r.info.run_id for r in stack.mlflow_runs(workspace)}
    with stack.prefect() as client:
        flow_runs_before = {run.id for run in client.read_flow_runs()}
    stop_service(stack.directory, "postgres")
    stack.up()
    again = ok(wsss(*GRAPHNET, "--workspace", workspace, env=stack.env))
    n = len(Workspace(workspace).image_ids())
    for stage in GRAPHNET_OUTPUTS:
        assert f"{stage}: {n} images, 0 computed, {n} already done" in again.stderr, again.stderr
    assert runs_before <= {r.info.run_id for r in stack.mlflow_runs(workspace)}
    with stack.prefect() as client:
        assert flow_runs_before <= {run.id for run in client.read_flow_runs()}


@pytest.fixture(scope="module")
def deployed(stack):
    """prefect.yaml's `superpixels` and `run` deployments on the stack's server, as the docs deploy them."""
    env = {**stack.env, "WSSS_HOME": str(REPO_ROOT), "PREFECT_HOME": str(stack.directory / "prefect")}
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DASK_"))}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "superpixels", "--name", "run"],
        env={**full, **env}, cwd=REPO_ROOT, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    ok(result)
    return stack


def wait_final(stack: Stack, flow_run_id, timeout: float = COMMAND_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    with stack.prefect() as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            assert time.monotonic() < deadline, f"flow run still {flow_run.state_name}\n{_log(stack, 'prefect-worker')}"
            time.sleep(0.5)


def _log(stack: Stack, service: str) -> str:
    return "\n".join((stack.directory / "logs" / f"{service}.log").read_text(errors="replace").splitlines()[-40:])


def test_the_run_deployment_runs_on_the_stack(deployed, datasets, tmp_path):
    stack, workspace = deployed, tmp_path / "ws"
    settings = {
        "ingest": {"root": str(datasets / "small"), "splits": ["train"]},
        "paths": ["graphnet-scribbles"],
        "graphnet": {"overrides": {"gcn": {"pretrain_epochs": 10}}},
        "segmentation": {"rounds": 0},
        "execution": {"progress": False},
    }
    with stack.prefect() as client:
        deployment = client.read_deployment_by_name("run/run")
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"workspace": str(workspace), "settings": settings})
    final = wait_final(stack, flow_run.id)
    assert final.state.is_completed(), f"{final.state_name}: {final.state.message}\n{_log(stack, 'prefect-worker')}"
    assert Workspace(workspace).done_ids("pseudo/gcn-scribbles") == set(Workspace(workspace).image_ids())
    assert stack.mlflow_runs(workspace) and not (workspace / "mlflow.db").exists()


def test_the_prefect_worker_killed_mid_run_crashes_the_run_and_a_retry_finishes_it(deployed, datasets, reference, tmp_path):
    """The worker and its flow-run process SIGKILLed in the middle of a run (a worker machine
    lost): the stack's automation marks the silent run Crashed; the worker back (`up`), `prefect
    flow-run retry` finishes it and leaves the images done before untouched."""
    from wsss_core.stack import stop_service

    stack, workspace = deployed, tmp_path / "ws"
    ok(wsss("ingest", "--root", datasets / "large", "--workspace", workspace, "--no-progress", env=stack.env))
    parameters = {"workspace": str(workspace),  # one thread in the flow-run process: killing it stops the work
                  "execution": {"engine": "threads", "workers": 1, "batch_size": 2, "progress": False}}
    with stack.prefect() as client:
        deployment = client.read_deployment_by_name("superpixels/superpixels")
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    markers = workspace / "markers" / "superpixels"
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while not (markers.is_dir() and any(markers.rglob("*.json"))):
        assert time.monotonic() < deadline, f"no image done\n{_log(stack, 'prefect-worker')}"
        time.sleep(0.05)
    stop_service(stack.directory, "prefect-worker", sig=signal.SIGKILL)
    crashed = wait_final(stack, flow_run.id, timeout=CRASH_AFTER_S + 90)
    assert crashed.state.is_crashed() and "no heartbeat" in crashed.state.message, f"{crashed.state_name}: {crashed.state.message}"
    done_before = {p.name: p.read_text() for p in markers.rglob("*.json")}
    assert 0 < len(done_before) < len(Workspace(workspace).image_ids())  # caught in the middle

    stack.up()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DASK_"))}
    ok(subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", str(flow_run.id)],
                      env={**full, **stack.env}, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S))
    final = wait_final(stack, flow_run.id)
    assert final.state.is_completed(), f"{final.state_name}: {final.state.message}\n{_log(stack, 'prefect-worker')}"
    done_after = {p.name: p.read_text() for p in markers.rglob("*.json")}
    assert {name: done_after[name] for name in done_before} == done_before  # not redone
    assert_same_arrays(workspace, reference / "large", ("superpixels",))


def test_down_stops_every_process_up_started(stack):
    from wsss_core.stack import stack_processes, status

    processes = stack_processes(stack.directory)
    assert len(processes) >= 8
    stopped = ok(wsss("stack", "down", "--dir", stack.directory)).stderr
    alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive
    # each service stopped on its signal, none waited for SIGKILL (issue 29: dask workers took > 16 s)
    took = {line.split(":")[0]: float(line.rsplit(", ", 1)[1].split(" s)")[0])
            for line in stopped.splitlines() if "stopped (pid" in line}
    assert took and max(took.values()) < 15, stopped
    assert not any(s["up"] for s in status(stack.directory))
