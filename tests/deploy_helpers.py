"""Run the deployments of prefect.yaml for real: a temporary Prefect server, `prefect deploy --all`,
a process worker, and flow runs created from the deployments.

`deployed_project()` does it all and yields a `DeployedProject`; `tests/conftest.py` wraps it in the
module-scoped `deployed_project` fixture. To test another deployment (a whole-pipeline `run`
deployment, say), use that fixture and call

    flow_run = deployed_project.run("run/run", {"root": ..., "workspace": ...})
    deployed_project.assert_completed(flow_run)

To let a schedule fire instead (tests/test_schedule.py), start the server with
`server_env=FAST_SCHEDULER_ENV`, deploy with a schedule (`deploy=("--name", "run", "--interval", ...)`)
and wait with `wait_for_scheduled_run`; `pause_schedule` / `resume_schedule` keep a second run
from starting before the test is ready for it.

Every wait is bounded, and every failure says what the server and the worker logged.
Everything talks to the server through PREFECT_API_URL=http://127.0.0.1:<port>/api with an
isolated PREFECT_HOME; no PREFECT_* variable of the calling shell reaches a child process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

REPO_ROOT = Path(__file__).resolve().parents[1]
POOL = "wsss-local"  # the work pool prefect.yaml deploys to

SERVER_STARTUP_TIMEOUT_S = 120.0  # a loaded 2-core machine needs ~12 s; the margin is for bad days
CLI_TIMEOUT_S = 120.0  # one `prefect ...` command (deploy imports every flow: ~7 s)
RUN_TIMEOUT_S = 180.0  # one flow run, from creation to a final state (~10 s on 6 small images)
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL: a 3.8 worker can hang in its shutdown
LOG_TAIL_LINES = 60

# Server settings for a test that waits for a schedule to fire. Prefect's scheduler service
# (two docket "perpetual" services in 3.8) looks for deployments whose active schedules need
# runs every 60 s, and for deployments updated in the last few seconds every 5 s; resuming a
# schedule does not touch the deployment row, so without these a resumed schedule's next run
# would wait up to a minute for the main loop. Each pass keeps at least 3 runs and 1 hour
# ahead, at most 100: at a 15 s interval that is 100 runs re-generated on every 1 s pass.
FAST_SCHEDULER_ENV = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "3",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "PT30S",  # an ISO 8601 duration ("30" is refused)
}
# Longer than one pass of the scheduler loop above (1 s), with a margin for a loaded machine.
SCHEDULER_PASS_S = 3.0


class DeploymentTestError(AssertionError):
    """Orchestration did not do what the test needed; the message carries the logs."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, api_url: str, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of every child process: this process's, minus its Prefect settings, plus ours.

    A value of None in `extra` removes that variable.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",  # no telemetry (there may be no network)
        PREFECT_SERVER_UI_ENABLED="false",  # 3.8 also reads the older PREFECT_UI_ENABLED
        PREFECT_LOGGING_LEVEL="INFO",  # flows/__init__ would default it to WARNING: keep the logs useful
        PREFECT_WORKER_QUERY_SECONDS="1",  # the worker polls every 10 s by default
        # With this on (and uv on PATH) a worker runs flows through `uv run --project <WSSS_HOME>`,
        # which would build a fresh environment (torch included) from the network.
        PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES="false",
        PYTHONUNBUFFERED="1",
    )
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def prefect_command(*args: str) -> list[str]:
    """`prefect ...` with the interpreter that runs the tests (its virtualenv's Prefect)."""
    return [sys.executable, "-m", "prefect", *args]


@dataclass
class ManagedProcess:
    """A long-running child (server, worker) in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> ManagedProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() reaches the children it spawns
            )
        return cls(name, process, log_path)

    def running(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return f"--- {self.name} log ({self.log_path}), last lines ---\n{log_tail(self.log_path)}"

    def wait(self, timeout: float) -> int:
        """Its exit code once it exits by itself (a command, not a server); a DeploymentTestError
        with its log after `timeout` seconds (it is stopped then)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise DeploymentTestError(f"{self.name} did not finish in {timeout:.0f} s\n{self.tail()}") from None

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM to the process group, SIGKILL after `grace` seconds; always reaps the child."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:
                # The leader is gone; its children (a server's uvicorn, a worker's flow runs) may not be.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
            return
        self.process.wait(timeout=grace)


@dataclass
class PrefectServer:
    home: Path
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def env(self, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        return prefect_env(self.home, self.api_url, extra)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def cli(
        self,
        *args: str,
        cwd: Path = REPO_ROOT,
        env: Mapping[str, str | None] | None = None,
        timeout: float = CLI_TIMEOUT_S,
    ) -> str:
        """Run `prefect <args>` against this server; its output, or a DeploymentTestError with the logs."""
        command = prefect_command(*args)
        shown = "prefect " + " ".join(args)
        try:
            result = subprocess.run(
                command,
                cwd=cwd,
                env=self.env(env),
                stdin=subprocess.DEVNULL,  # a prompt fails at once instead of waiting forever
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"") + (exc.stderr or b"")
            output = output.decode(errors="replace") if isinstance(output, bytes) else output
            raise DeploymentTestError(
                f"`{shown}` (in {cwd}) did not finish in {timeout:.0f} s\n--- its output ---\n{output[-4000:]}\n"
                f"{self.process.tail()}"
            ) from None
        if result.returncode != 0:
            raise DeploymentTestError(
                f"`{shown}` (in {cwd}) exited with {result.returncode}\n"
                f"--- its output ---\n{(result.stdout + result.stderr)[-4000:]}\n{self.process.tail()}"
            )
        return result.stdout


@contextlib.contextmanager
def prefect_server(
    directory: Path,
    timeout: float = SERVER_STARTUP_TIMEOUT_S,
    attempts: int = 3,
    env: Mapping[str, str | None] | None = None,
) -> Iterator[PrefectServer]:
    """A `prefect server start` on 127.0.0.1 with its own PREFECT_HOME and SQLite database, stopped on exit.

    A port taken between choosing it and binding it makes the server exit at once: then another
    port is tried (`attempts` in all). `env`: more settings for the server process only (e.g.
    FAST_SCHEDULER_ENV), as in prefect_env.
    """
    home = directory / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    server = None
    for attempt in range(1, attempts + 1):
        port = free_port()
        command = prefect_command(
            "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--analytics-off"
        )
        process = ManagedProcess.start(
            "prefect server",
            command,
            prefect_env(home, f"http://127.0.0.1:{port}/api", env),
            cwd=directory,
            log_path=directory / f"server-{attempt}.log",
        )
        server = PrefectServer(home, port, process)
        deadline = time.monotonic() + timeout
        while process.running() and time.monotonic() < deadline and not server.healthy():
            time.sleep(0.5)
        if server.healthy():
            break
        exited = not process.running()
        process.stop()
        if exited and attempt < attempts:
            continue
        reason = "exited" if exited else f"did not answer {server.api_url}/health within {timeout:.0f} s"
        raise DeploymentTestError(f"the Prefect server {reason}\n{process.tail()}")
    assert server is not None
    try:
        yield server
    finally:
        server.process.stop()


@dataclass
class DeployedProject:
    """A server with prefect.yaml's deployments registered and a process worker polling their pool."""

    server: PrefectServer
    worker: ManagedProcess
    wsss_home: Path
    timings: dict[str, float] = field(default_factory=dict)  # seconds per set-up step

    def logs(self) -> str:
        return f"{self.worker.tail()}\n{self.server.process.tail()}"

    def client(self):
        """A client of this server (not of whatever PREFECT_API_URL this process has)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.server.api_url)

    def run(self, deployment: str, parameters: Mapping[str, Any] | None = None, timeout: float = RUN_TIMEOUT_S) -> FlowRun:
        """Create a flow run of `flow/deployment` and wait (bounded) until it is in a final state.

        Parameters travel as JSON and are checked against the deployment's schema by the server;
        the flow then validates them again against its signature.
        """
        with self.client() as client:
            deployment_id = client.read_deployment_by_name(deployment).id
            flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=dict(parameters or {}))
        return self.wait(flow_run.id, deployment, timeout)

    def retry(self, flow_run: FlowRun, timeout: float = RUN_TIMEOUT_S) -> FlowRun:
        """`prefect flow-run retry` a finished run (the worker runs it again); wait for its final state."""
        self.server.cli("flow-run", "retry", str(flow_run.id))
        return self.wait(flow_run.id, f"retry of {flow_run.name}", timeout)

    def wait(self, flow_run_id: Any, label: str, timeout: float = RUN_TIMEOUT_S) -> FlowRun:
        with self.client() as client:
            deadline = time.monotonic() + timeout
            while True:
                flow_run = client.read_flow_run(flow_run_id)
                if flow_run.state is not None and flow_run.state.is_final():
                    return flow_run
                if not self.worker.running():
                    raise DeploymentTestError(
                        f"the worker exited (code {self.worker.process.returncode}) while flow run "
                        f"{flow_run.name!r} of {label!r} was {flow_run.state_name}\n{self.logs()}"
                    )
                if time.monotonic() > deadline:
                    raise DeploymentTestError(
                        f"flow run {flow_run.name!r} of {label!r} still {flow_run.state_name} after "
                        f"{timeout:.0f} s\n{self.flow_run_logs(flow_run)}\n{self.logs()}"
                    )
                time.sleep(0.5)

    def flow_run_logs(self, flow_run: FlowRun, limit: int = 200) -> str:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import LogSort

        try:
            with self.client() as client:
                logs = client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])), limit=limit, sort=LogSort.TIMESTAMP_ASC
                )
        except Exception as exc:  # the logs are for a message about another failure
            return f"(could not read the flow run's logs: {exc!r})"
        lines = "\n".join(f"{log.timestamp:%H:%M:%S} {log.name}: {log.message}" for log in logs)
        return f"--- flow run {flow_run.name!r} logs ---\n{lines or '(none)'}"

    def logs_containing(self, flow_run: FlowRun, text: str, timeout: float = 30.0) -> str:
        """The flow run's logs once they contain `text` (a run's last logs reach the server a
        little after its final state), or the logs as they are after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            logs = self.flow_run_logs(flow_run)
            if text in logs or time.monotonic() > deadline:
                return logs
            time.sleep(0.5)

    def assert_completed(self, flow_run: FlowRun) -> None:
        state = flow_run.state
        if state is None or not state.is_completed():
            raise DeploymentTestError(
                f"flow run {flow_run.name!r} ended {flow_run.state_name}: {state.message if state else ''}\n"
                f"parameters: {flow_run.parameters}\n{self.flow_run_logs(flow_run)}\n{self.logs()}"
            )


    # ------------------------------------------------------------------ schedules
    def deployment(self, name: str):
        """The deployment `flow/deployment` as the server has it (its schedules included)."""
        with self.client() as client:
            return client.read_deployment_by_name(name)

    def schedule_runs(self, deployment, schedule) -> list[FlowRun]:
        """Every flow run `schedule` (a DeploymentSchedule of `deployment`) has created and the
        server still has, by expected start time: a paused schedule's future runs are deleted."""
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
        from prefect.client.schemas.sorting import FlowRunSort

        with self.client() as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )
        return [run for run in runs if run.created_by is not None and run.created_by.id == schedule.id]

    def deployment_runs(self, deployment) -> list[FlowRun]:
        """Every flow run of a deployment, however created, by expected start time."""
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        with self.client() as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )

    def wait_for_scheduled_run(self, deployment, schedule, created_after=None, timeout: float = RUN_TIMEOUT_S) -> FlowRun:
        """The first run of `schedule` (created after `created_after`, a datetime, when given)
        that a worker has taken (no longer Scheduled), once there is one; bounded.

        The scheduler creates runs ahead of time, all Scheduled; the worker takes one a few
        seconds before its time (PREFECT_WORKER_PREFETCH_SECONDS, 10 s) and the server holds it
        in Pending until then. When the scheduler service fails (issue 27: SQLAlchemy 2.1 under
        Prefect 3.8), no run is ever created: the server's log tail says why.
        """
        deadline = time.monotonic() + timeout
        while True:
            runs = self.schedule_runs(deployment, schedule)
            if created_after is not None:
                runs = [run for run in runs if run.created > created_after]
            taken = [run for run in runs if run.state is not None and not run.state.is_scheduled()]
            if taken:
                return taken[0]
            if not self.worker.running():
                raise DeploymentTestError(
                    f"the worker exited (code {self.worker.process.returncode}) before a run of schedule "
                    f"{schedule.id} started\n{self.logs()}"
                )
            if time.monotonic() > deadline:
                found = "\n".join(
                    f"  {run.name}: {run.state_name}, expected {run.expected_start_time}, created {run.created}"
                    for run in runs
                ) or "  (none)"
                raise DeploymentTestError(
                    f"no run of schedule {schedule.id} ({schedule.schedule}, active {schedule.active}) of "
                    f"{deployment.name!r} started within {timeout:.0f} s"
                    + (f" of {created_after:%H:%M:%S}" if created_after is not None else "")
                    + f"; runs the schedule created:\n{found}\n{self.logs()}"
                )
            time.sleep(0.5)

    def pause_schedule(self, deployment, schedule) -> None:
        """Make a schedule inactive: the server deletes the runs it created for the future, and
        the scheduler creates none until it is resumed.

        Twice, one scheduler pass apart: a pass that read the schedule as active just before the
        first update can insert its runs just after the update deleted the others; a pass that
        starts after it sees the schedule inactive. The second update deletes such runs.
        `parameters` travel with every update: the server resets a schedule's parameters to {}
        on any update that leaves them out (3.8: its DeploymentScheduleUpdate defaults them to {}
        and drops only None values), so `prefect deployment schedule pause` loses them.
        """
        self._set_schedule_active(deployment, schedule, False)
        time.sleep(SCHEDULER_PASS_S)
        self._set_schedule_active(deployment, schedule, False)

    def resume_schedule(self, deployment, schedule) -> None:
        self._set_schedule_active(deployment, schedule, True)

    def _set_schedule_active(self, deployment, schedule, active: bool) -> None:
        with self.client() as client:
            client.update_deployment_schedule(
                deployment.id, schedule.id, active=active, parameters=dict(schedule.parameters or {})
            )


@contextlib.contextmanager
def deployed_project(
    directory: Path,
    wsss_home: Path = REPO_ROOT,
    prefect_file: str = "prefect.yaml",
    worker_env: Mapping[str, str | None] | None = None,
    server_env: Mapping[str, str | None] | None = None,
    deploy: Sequence[str] = ("--all",),
) -> Iterator[DeployedProject]:
    """Server, work pool, `prefect --no-prompt deploy --all` from the repo root, a worker; all stopped on exit.

    `{{ $WSSS_HOME }}` in the pull step is filled in by `prefect deploy` from its environment, so the
    deployments carry `wsss_home`; the worker does not get WSSS_HOME (unless `worker_env` says so),
    which checks exactly that. `deploy`: what `prefect deploy` is asked for instead of `--all`, e.g.
    one deployment with deploy-time overrides (`--name run --interval 15 --params '{...}'`).
    `server_env`: settings of the server process (FAST_SCHEDULER_ENV).
    """
    timings: dict[str, float] = {}
    started = time.monotonic()
    with prefect_server(directory, env=server_env) as server:
        timings["server start"] = time.monotonic() - started
        step = time.monotonic()
        server.cli("work-pool", "create", POOL, "--type", "process")
        timings["work-pool create"] = time.monotonic() - step
        step = time.monotonic()
        server.cli(
            "--no-prompt", "deploy", *deploy, "--prefect-file", prefect_file,
            cwd=REPO_ROOT, env={"WSSS_HOME": str(wsss_home)},
        )  # fmt: skip
        timings["deploy"] = time.monotonic() - step
        worker = ManagedProcess.start(
            "prefect worker",
            prefect_command("worker", "start", "--pool", POOL, "--name", "wsss-test-worker"),
            server.env({"WSSS_HOME": None, **(worker_env or {})}),
            cwd=directory,  # not the repo: the pull step, not the worker's directory, must find the code
            log_path=directory / "worker.log",
        )
        try:
            yield DeployedProject(server, worker, wsss_home, timings)
        finally:
            worker.stop()
