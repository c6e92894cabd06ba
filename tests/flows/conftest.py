from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DASK_WORKERS = 2
DASK_START_TIMEOUT_S = 120  # the machine has 2 shared cores; a cold worker start takes seconds


@pytest.fixture(autouse=True)
def _prefect(prefect_harness):
    yield


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"<{path}: {error}>"
    return "\n".join(text[-lines:])


def _stop(processes: list[subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM each process's own session (a nanny's worker child included), then SIGKILL stragglers."""
    for proc in processes:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for proc in processes:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the session may outlive its leader (a nanny's child): kill what is left of it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.fixture(scope="session")
def dask_cluster_processes(prefect_harness, tmp_path_factory):
    """A real external Dask cluster: `dask scheduler` and DASK_WORKERS `dask worker` processes.

    Everything listens on 127.0.0.1 only: --host covers the scheduler, nanny and worker comms,
    but not their HTTP servers (health, metrics), which start even with --no-dashboard and
    bind ":PORT" to 0.0.0.0, hence --dashboard-address 127.0.0.1:0. The scheduler picks its
    own port and writes it to a scheduler file (no race for a "free" port).

    Workers run from the repo root with it on PYTHONPATH: the venv's editable install points
    at another checkout, so without it they would import someone else's flows/tasks/wsss_core
    (checked below).

    Prefect: a task run on a worker gets the flow's settings (API URL included) from the
    context prefect-dask ships with each task, so the workers report to the harness even
    without PREFECT_API_URL. It is set anyway, to the harness's (hence the dependency on
    prefect_harness, which must start first), so that nothing on a worker outside a task
    run's context reports elsewhere or starts a temporary Prefect server of its own.

    Yields (address, processes); teardown stops them all, also after a failed start.
    """
    import prefect.settings
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-cluster")
    scheduler_file = logs / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PREFECT_API_URL"] = prefect.settings.PREFECT_API_URL.value()

    processes: list[subprocess.Popen] = []
    names: list[str] = []

    def start(name: str, args: list[str]) -> None:
        log = logs / f"{name}.log"
        names.append(name)
        with open(log, "wb") as out:
            processes.append(
                subprocess.Popen(
                    [dask, *args],
                    cwd=REPO_ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: teardown reaches the nanny's child too
                )
            )

    def failure(message: str) -> str:
        tails = "\n".join(f"--- {name}.log (last lines) ---\n{_tail(logs / f'{name}.log')}" for name in names)
        return f"{message}\n{tails}"

    try:
        start(
            "scheduler",
            [
                "scheduler",
                "--host", "127.0.0.1",
                "--port", "0",
                "--no-dashboard",  # no Bokeh pages; the HTTP server (health, metrics) runs anyway:
                "--dashboard-address", "127.0.0.1:0",  # default ":8787" means 0.0.0.0
                "--scheduler-file", str(scheduler_file),
            ],
        )  # fmt: skip
        deadline = time.monotonic() + DASK_START_TIMEOUT_S
        address = None
        while address is None:
            if processes[0].poll() is not None:
                pytest.fail(failure(f"dask scheduler exited with {processes[0].returncode}"))
            if time.monotonic() > deadline:
                pytest.fail(failure(f"dask scheduler wrote no {scheduler_file} in {DASK_START_TIMEOUT_S} s"))
            try:
                address = json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        for i in range(DASK_WORKERS):
            start(
                f"worker-{i}",
                [
                    "worker", address,
                    "--nworkers", "1",
                    "--nthreads", "1",
                    "--host", "127.0.0.1",
                    "--no-dashboard",
                    "--dashboard-address", "127.0.0.1:0",  # HTTP server; --host does not apply to it
                    "--name", f"test-worker-{i}",
                ],
            )  # fmt: skip
        with Client(address, timeout=30) as client:
            while True:  # in short waits, so that a worker that died fails the fixture at once
                try:
                    client.wait_for_workers(DASK_WORKERS, timeout=2)
                    break
                except TimeoutError:
                    pass
                exited = {n: p.returncode for n, p in zip(names, processes) if p.poll() is not None}
                if exited or time.monotonic() > deadline:
                    connected = len(client.scheduler_info(n_workers=-1)["workers"])
                    pytest.fail(
                        failure(
                            f"{connected} of {DASK_WORKERS} dask workers connected to {address} "
                            f"(exited: {exited or 'none'}; waited at most {DASK_START_TIMEOUT_S} s)"
                        )
                    )
            specs = client.run(importlib.util.find_spec, "flows")
        origins = {worker: spec.origin if spec else None for worker, spec in specs.items()}
        wrong = {w: o for w, o in origins.items() if not (o and o.startswith(f"{REPO_ROOT}{os.sep}"))}
        if wrong:
            pytest.fail(f"dask workers import flows from outside {REPO_ROOT}: {wrong}")
        yield address, processes
    finally:
        _stop(processes[1:])  # workers first: a worker that loses its scheduler retries and logs noise
        _stop(processes[:1])


@pytest.fixture(scope="session")
def dask_scheduler_address(dask_cluster_processes) -> str:
    """Address (tcp://127.0.0.1:PORT) of a real external Dask scheduler with DASK_WORKERS workers."""
    return dask_cluster_processes[0]
