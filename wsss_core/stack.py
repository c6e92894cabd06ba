"""A local production stack in one folder: PostgreSQL, a Prefect server and an MLflow tracking
server on it, a Dask scheduler with its workers, a Prefect process worker (`wsss stack`).

Everything listens on 127.0.0.1 only, on ports chosen free at the first `up` and recorded in
DIR/stack.json with each service's pid and start time; every datum lives under DIR
(postgres/ the database cluster, mlflow/artifacts, logs/). `up` starts what is not running
(so it also restarts a service that died or was stopped), `down` stops exactly the recorded
processes with everything they spawned. The commands the stack runs are the projects' own
CLIs (initdb/postgres, `prefect server start`, `mlflow server`, `dask scheduler|worker`,
`prefect worker start`), so this module imports none of them.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system
user (Debian's package creates it) and its processes run as that user.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import secrets
import shlex
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss_core.errors import UsageError, WsssError
from wsss_core.processes import (
    free_port, listeners, port_open, process_tree, recorded_process, start_process, stop_process_tree,
)

STATE_FILE = "stack.json"
HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout Dask workers import wsss from
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_SYSTEM_USER = "postgres"
DB_USER = "wsss"
DATABASES = ("prefect", "mlflow")


class StackError(WsssError):
    """A service of the stack did not start or stop; the message names its log."""


@dataclass(frozen=True)
class StackConfig:
    """How the stack runs. pool: the work pool prefect.yaml deploys to."""

    dask_workers: int = 2
    pool: str = "wsss-local"
    start_timeout_s: float = 180.0  # Prefect's first start migrates its database: ~30 s on a loaded 2-core machine
    stop_timeout_s: float = 20.0  # then SIGKILL
    heartbeat_s: int = 30  # a flow run's heartbeat (Prefect's minimum); its default, 180 s, is slow to notice a loss
    crash_after_s: int = 90  # a flow run silent this long (its process or machine gone) is marked Crashed


@dataclass(frozen=True)
class Service:
    """One process of the stack: how to start it, when it is up, how it stops."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    ready: Callable[[], bool]
    address: str
    user: str | None = None
    stop_signal: int = signal.SIGTERM


# ------------------------------------------------------------------ state


def state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(state_path(directory).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    from wsss_core.store.files import write_json_atomic

    write_json_atomic(state_path(directory), state)
    os.chmod(state_path(directory), 0o600)  # it holds the database password


def new_state(config: StackConfig) -> dict[str, Any]:
    """Ports and the database password, chosen once: a restarted service keeps its address."""
    names = ("postgres", "prefect", "mlflow", "dask", "dask_dashboard")
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(names):
        ports = {name: free_port(HOST) for name in names}
    return {"ports": ports, "password": secrets.token_hex(16), "dask_workers": config.dask_workers,
            "pool": config.pool, "heartbeat_s": config.heartbeat_s, "services": {}}


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One `up` or `down` at a time per folder."""
    with open(directory / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------ addresses


def environment(state: dict[str, Any]) -> dict[str, str]:
    """What a wsss command (or `prefect`, `mlflow`) needs to use the stack."""
    ports = state["ports"]
    return {
        "PREFECT_API_URL": f"http://{HOST}:{ports['prefect']}/api",
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{ports['mlflow']}",
        "DASK_SCHEDULER_ADDRESS": f"tcp://{HOST}:{ports['dask']}",
    }


def export_lines(state: dict[str, Any]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in environment(state).items()]


def database_url(state: dict[str, Any], database: str, driver: str = "postgresql") -> str:
    return f"{driver}://{DB_USER}:{state['password']}@{HOST}:{state['ports']['postgres']}/{database}"


# ------------------------------------------------------------------ PostgreSQL


def postgres_bin() -> Path:
    """Debian's PostgreSQL programs (the newest version installed)."""
    found = sorted(glob.glob(POSTGRES_BIN_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    found = [p for p in found if Path(p, "initdb").is_file()]
    if not found:
        raise StackError(
            f"PostgreSQL is not installed (no {POSTGRES_BIN_GLOB}/initdb): apt-get install postgresql"
        )
    return Path(found[-1])


def postgres_user() -> str | None:
    """The user PostgreSQL runs as: `postgres` when we are root (it refuses root), else ourselves."""
    return POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None


def check_reachable(path: Path, user: str) -> None:
    """`user` must be able to walk down to `path`: a parent folder closed to others (pytest's
    /tmp/pytest-of-root, a home folder) stops PostgreSQL with a cryptic error."""
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    for parent in [*reversed(path.parents)]:
        info = parent.stat()
        if info.st_uid != uid and not info.st_mode & stat.S_IXOTH:
            raise StackError(
                f"{path}: user {user} (PostgreSQL runs as it, not as root) cannot reach it: {parent} is "
                f"mode {stat.S_IMODE(info.st_mode):o}; choose a folder others may pass through (e.g. under /tmp)"
            )


def _postgres_dirs(directory: Path) -> tuple[Path, Path, Path]:
    base = directory / "postgres"
    return base, base / "data", base / "run"


def init_postgres(directory: Path, state: dict[str, Any]) -> None:
    """initdb a cluster of the stack's own (once): password authentication on 127.0.0.1,
    unix sockets only in DIR/postgres/run (the owner's)."""
    base, data, run = _postgres_dirs(directory)
    if (data / "PG_VERSION").is_file():
        return
    user = postgres_user()
    base.mkdir(parents=True, exist_ok=True)
    run.mkdir(exist_ok=True)
    password_file = base / "password"
    password_file.write_text(state["password"] + "\n")
    password_file.chmod(0o600)
    if user is not None:
        check_reachable(base, user)
        import pwd

        entry = pwd.getpwnam(user)
        for path in (base, run, password_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        base.chmod(0o700)
    log = directory / "logs" / "initdb.log"
    command = [str(postgres_bin() / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={password_file}",
               "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C"]
    record = start_process(command, log, env=_clean_env(), cwd=base, user=user)
    process = recorded_process(record)
    if process is not None and process.wait(timeout=120) != 0:
        raise StackError(f"initdb failed for {data}; see {log}")
    password_file.unlink()


def create_databases(state: dict[str, Any]) -> None:
    import psycopg2

    connection = psycopg2.connect(database_url(state, "postgres"), connect_timeout=10)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name in DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def postgres_ready(state: dict[str, Any]) -> bool:
    import psycopg2

    try:
        psycopg2.connect(database_url(state, "postgres"), connect_timeout=2).close()
        return True
    except psycopg2.Error:
        return False


# ------------------------------------------------------------------ services


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the settings that would point a server elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "DASK_")) and k not in ("PGPASSWORD", "PGHOST")}
    env.update(extra or {})
    return env


def _http_ok(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status == 200
        except OSError:
            return False

    return ready


def _tool(name: str) -> list[str]:
    """A program of this virtualenv (`prefect`, `mlflow`, `dask`), by its interpreter."""
    return [sys.executable, "-m", name] if name != "dask" else [str(Path(sys.executable).with_name("dask"))]


def services(directory: Path, state: dict[str, Any]) -> list[Service]:
    """The stack's services in start order (`down` stops them in reverse)."""
    ports, env = state["ports"], environment(state)
    _, data, run = _postgres_dirs(directory)
    prefect_home = directory / "prefect"
    prefect_env = _clean_env({
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": env["PREFECT_API_URL"],
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",  # else a worker may build a venv from the network
    })
    # What runs wsss code (Dask workers, flow runs of the Prefect worker): this checkout, the stack's servers.
    wsss_env = {**prefect_env, **env, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
    dask_address = env["DASK_SCHEDULER_ADDRESS"]
    listed = [
        Service(
            "postgres",
            [str(postgres_bin() / "postgres"), "-D", str(data), "-p", str(ports["postgres"]),
             "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={run}"],
            _clean_env(), data.parent, lambda: postgres_ready(state), f"{HOST}:{ports['postgres']}",
            user=postgres_user(), stop_signal=signal.SIGINT,  # "fast" shutdown; SIGTERM waits for every client
        ),
        Service(
            "prefect-server",
            [*_tool("prefect"), "server", "start", "--host", HOST, "--port", str(ports["prefect"]), "--analytics-off"],
            {**prefect_env, "PREFECT_API_DATABASE_CONNECTION_URL": database_url(state, "prefect", "postgresql+asyncpg"),
             "PREFECT_UI_API_URL": env["PREFECT_API_URL"]},
            directory, _http_ok(f"{env['PREFECT_API_URL']}/health"), env["PREFECT_API_URL"],
        ),
        Service(
            "mlflow-server",
            [*_tool("mlflow"), "server", "--host", HOST, "--port", str(ports["mlflow"]), "--workers", "1",
             "--backend-store-uri", database_url(state, "mlflow"),
             "--artifacts-destination", str(directory / "mlflow" / "artifacts"),
             # uvicorn otherwise waits on SIGTERM for every open request, without bound: once a
             # CI run saw it outlast the 20 s stop timeout and take SIGKILL
             "--uvicorn-opts", "--timeout-graceful-shutdown 5"],
            # no job runner: its seven consumer processes (~1.4 GB) serve MLflow's GenAI jobs, not tracking
            _clean_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}), directory,
            _http_ok(f"{env['MLFLOW_TRACKING_URI']}/health"), env["MLFLOW_TRACKING_URI"],
        ),
        Service(
            "dask-scheduler",
            [*_tool("dask"), "scheduler", "--host", HOST, "--port", str(ports["dask"]),
             "--dashboard-address", f"{HOST}:{ports['dask_dashboard']}"],  # default ":8787" is every interface
            wsss_env, REPO_ROOT, lambda: port_open(HOST, ports["dask"]), dask_address,
        ),
    ]
    for i in range(state["dask_workers"]):
        listed.append(Service(
            f"dask-worker-{i}",
            [*_tool("dask"), "worker", dask_address, "--nworkers", "1", "--nthreads", "1", "--host", HOST,
             "--dashboard-address", f"{HOST}:0", "--name", f"stack-worker-{i}"],
            wsss_env, REPO_ROOT, lambda: True, f"worker of {dask_address}",
        ))
    listed.append(Service(
        "prefect-worker",
        [*_tool("prefect"), "worker", "start", "--pool", state["pool"], "--name", "wsss-stack-worker"],
        {**wsss_env, "PREFECT_WORKER_QUERY_SECONDS": "2",
         "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(state.get("heartbeat_s", StackConfig.heartbeat_s))},
        directory, lambda: True, f"pool {state['pool']}",
    ))
    return listed


# ------------------------------------------------------------------ up, status, down


def up(directory: Path, config: StackConfig = StackConfig(), say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Start every service that is not running (all of them the first time); the state."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        state = read_state(directory) or new_state(config)
        state["dask_workers"] = config.dask_workers
        _write_state(directory, state)
        init_postgres(directory, state)
        for service in services(directory, state):
            if service.name == "prefect-worker":  # (an HTTP call: --crash-after may have changed)
                create_crash_automation(state, config)
            if recorded_process(state["services"].get(service.name, {})) is not None:
                say(f"{service.name}: already up ({service.address})")
                continue
            if service.name == "prefect-worker":
                create_work_pool(directory, state)
            record = start_process(service.command, directory / "logs" / f"{service.name}.log",
                                   service.env, service.cwd, service.user)
            record.update(address=service.address, stop_signal=int(service.stop_signal))
            state["services"][service.name] = record
            _write_state(directory, state)
            say(f"{service.name}: starting ({service.address}, pid {record['pid']})")
            wait_ready(directory, service, record, config.start_timeout_s)
            if service.name == "postgres":
                create_databases(state)
        for name in extra_workers(state):  # fewer workers asked for than run: the last ones stop
            record = state["services"].pop(name)
            stop_process_tree(record, record.get("stop_signal", signal.SIGTERM), config.stop_timeout_s)
            _write_state(directory, state)
            say(f"{name}: stopped (--dask-workers {config.dask_workers})")
        wait_for_dask_workers(directory, state, config.start_timeout_s)
    return state


def extra_workers(state: dict[str, Any]) -> list[str]:
    """The recorded Dask workers beyond the number asked for."""
    return [name for name in state["services"]
            if name.startswith("dask-worker-") and int(name.rsplit("-", 1)[1]) >= state["dask_workers"]]


def wait_ready(directory: Path, service: Service, record: dict[str, Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    log = directory / "logs" / f"{service.name}.log"
    while not service.ready():
        if recorded_process(record) is None:
            raise StackError(f"{service.name} exited at start; see {log}")
        if time.monotonic() > deadline:
            raise StackError(f"{service.name} did not answer at {service.address} within {timeout_s:.0f} s; see {log}")
        time.sleep(0.25)


def wait_for_dask_workers(directory: Path, state: dict[str, Any], timeout_s: float) -> None:
    from distributed import Client

    with Client(environment(state)["DASK_SCHEDULER_ADDRESS"], timeout=30) as client:
        try:
            client.wait_for_workers(state["dask_workers"], timeout=timeout_s)
        except TimeoutError:
            raise StackError(f"{state['dask_workers']} Dask workers did not connect within {timeout_s:.0f} s; "
                             f"see {directory / 'logs'}/dask-worker-*.log") from None


def create_work_pool(directory: Path, state: dict[str, Any]) -> None:
    """The process work pool prefect.yaml's deployments use (kept as it is when it exists)."""
    env = _clean_env({"PREFECT_API_URL": environment(state)["PREFECT_API_URL"], "PREFECT_HOME": str(directory / "prefect")})
    inspect = subprocess.run([*_tool("prefect"), "work-pool", "inspect", state["pool"]], env=env,
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if inspect.returncode == 0:
        return
    created = subprocess.run([*_tool("prefect"), "work-pool", "create", state["pool"], "--type", "process"], env=env,
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if created.returncode != 0:
        raise StackError(f"`prefect work-pool create {state['pool']}` failed: {(created.stdout + created.stderr).strip()[-500:]}")


CRASH_AUTOMATION = "wsss: flow runs without heartbeats crashed"
FINAL_EVENTS = ("Completed", "Failed", "Cancelled", "Crashed")


def crash_automation(heartbeat_s: int, crash_after_s: int) -> dict[str, Any]:
    """Prefect's recipe for runs whose process vanished (a worker machine lost, a SIGKILL): no
    heartbeat and no final state for crash_after_s seconds after a heartbeat marks the run Crashed,
    so that `prefect flow-run retry` can take it (the server has no such rule of its own)."""
    if crash_after_s <= heartbeat_s:
        raise UsageError(f"crash after {crash_after_s} s: must be longer than the heartbeat, {heartbeat_s} s")
    return {
        "name": CRASH_AUTOMATION,
        "description": f"A flow run with no heartbeat for {crash_after_s} s (its process is gone) ends Crashed.",
        "enabled": True,
        "trigger": {
            "type": "event", "posture": "Proactive", "threshold": 1, "within": crash_after_s,
            "after": ["prefect.flow-run.heartbeat"],
            "expect": ["prefect.flow-run.heartbeat", *(f"prefect.flow-run.{state}" for state in FINAL_EVENTS)],
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
            "for_each": ["prefect.resource.id"],
        },
        "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
                     "message": f"no heartbeat for {crash_after_s} s: its process or machine is gone"}],
    }


def create_crash_automation(state: dict[str, Any], config: StackConfig) -> None:
    """The crash automation on the stack's Prefect server, replaced when its settings changed."""
    api = environment(state)["PREFECT_API_URL"]
    wanted = crash_automation(state.get("heartbeat_s", config.heartbeat_s), config.crash_after_s)
    for automation in _api(f"{api}/automations/filter", {}):
        if automation["name"] == CRASH_AUTOMATION:
            if automation["trigger"].get("within") == wanted["trigger"]["within"]:
                return
            _api(f"{api}/automations/{automation['id']}", None, method="DELETE")
    _api(f"{api}/automations/", wanted)


def _api(url: str, body: Any, method: str = "POST") -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def status(directory: Path) -> list[dict[str, Any]]:
    """Each recorded service: name, pid, address, up (its process runs) or down."""
    state = read_state(directory.resolve())
    if state is None:
        raise UsageError(f"{directory}: no stack here (no {STATE_FILE}); `wsss stack up --dir {directory}` starts one")
    return [
        {"name": name, "pid": record.get("pid"), "address": record.get("address", ""),
         "up": recorded_process(record) is not None}
        for name, record in state["services"].items()
    ]


def stack_processes(directory: Path) -> list[Any]:
    """Every running process of the stack (services and what they spawned)."""
    state = read_state(directory.resolve()) or {"services": {}}
    found = []
    for record in state["services"].values():
        process = recorded_process(record)
        if process is not None:
            found.extend(process_tree(process))
    return found


def stack_listeners(directory: Path) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket the stack's processes listen on."""
    return listeners(stack_processes(directory))


def stop_service(directory: Path, name: str, timeout_s: float = StackConfig.stop_timeout_s,
                 sig: int | None = None) -> list[int]:
    """Stop one service (and what it spawned) with its stop signal, or `sig`; the pids it stopped."""
    directory = directory.resolve()
    state = read_state(directory)
    record = (state or {}).get("services", {}).get(name)
    if record is None:
        raise UsageError(f"{directory}: the stack has no service {name!r}")
    return stop_process_tree(record, sig or record.get("stop_signal", signal.SIGTERM), timeout_s)


def down(directory: Path, timeout_s: float = StackConfig.stop_timeout_s,
         say: Callable[[str], None] = lambda _: None) -> list[int]:
    """Stop every recorded service, last started first; the pids stopped."""
    directory = directory.resolve()
    if read_state(directory) is None:
        raise UsageError(f"{directory}: no stack here (no {STATE_FILE})")
    stopped: list[int] = []
    with _locked(directory):
        state = read_state(directory) or {"services": {}}
        for name in reversed(list(state["services"])):
            record = state["services"][name]
            started = time.monotonic()
            pids = stop_process_tree(record, record.get("stop_signal", signal.SIGTERM), timeout_s)
            took = time.monotonic() - started
            say(f"{name}: " + (f"stopped (pid {record['pid']}, {took:.1f} s)" if pids else "was not running"))
            stopped.extend(pids)
    return stopped
