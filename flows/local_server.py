"""One local Prefect server for every wsss command on this machine, started on first use.

Without PREFECT_API_URL, Prefect starts a temporary server inside each process that runs a
flow, and stops it when the process ends: 10-15 s of every command on a 2-core machine,
also when the command finds nothing to do. Instead, the first command starts one server in
the background (`python -m flows.local_server`: Prefect's own API and UI under uvicorn, on
127.0.0.1 and a free port, its database under the state directory, without the server's
services), later commands find it
through `server.json` there and use it, and the server stops by itself once no request has
come for `WSSS_SERVER_IDLE_S` seconds (default 600), so nothing outlives its use.

PREFECT_API_URL (the environment or the Prefect profile) still wins: a command then reports
to that server. WSSS_PREFECT_SERVER=temporary keeps Prefect's per-process server.
WSSS_STATE_DIR moves the state directory (default: $XDG_STATE_HOME/wsss, else
~/.local/state/wsss); one server serves one state directory.

The idle clock counts HTTP requests and open websockets (a command's event stream, a
worker's polling, the UI open in a browser). The server's services (the scheduler among
them) do not run: a deployment's schedule wants a server of its own (`prefect server start`,
docs/orchestration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsss_core.errors import UsageError, WsssError
from wsss_core.processes import process_alive, stop_process_tree

class ServerError(WsssError):
    """The shared server did not start; its log says why."""


MODE_VARIABLE = "WSSS_PREFECT_SERVER"  # "shared" (default) or "temporary"
IDLE_VARIABLE = "WSSS_SERVER_IDLE_S"
STATE_VARIABLE = "WSSS_STATE_DIR"
DEFAULT_IDLE_S = 600.0
STARTUP_TIMEOUT_S = 120.0
SERVER_FILE = "server.json"


def state_dir() -> Path:
    """Where the shared server keeps its database, log and server.json."""
    if os.environ.get(STATE_VARIABLE):
        return Path(os.environ[STATE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "wsss"


def idle_seconds() -> float:
    value = os.environ.get(IDLE_VARIABLE, "")
    try:
        return float(value) if value else DEFAULT_IDLE_S
    except ValueError:
        raise UsageError(f"{IDLE_VARIABLE}={value!r}: expected a number of seconds") from None


def start_shared_server() -> SharedServer | None:
    """Find the shared server, or start it without waiting for it; None where Prefect's own
    choice stands (PREFECT_API_URL set, or WSSS_PREFECT_SERVER=temporary). The caller goes
    on with its imports while a new server starts, then calls use() on the result."""
    mode = os.environ.get(MODE_VARIABLE, "shared")
    if mode not in ("shared", "temporary"):
        raise UsageError(f"{MODE_VARIABLE}={mode!r}: expected 'shared' or 'temporary'")
    if mode == "temporary":
        return None
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return None
    directory = state_dir()
    return SharedServer(directory, find_or_start(directory, idle_seconds()))


class SharedServer:
    """A shared server found or being started: use() waits until it answers, then points this
    process's Prefect client (and its child processes) at it."""

    def __init__(self, directory: Path, pid: int):
        self.directory = directory
        self.pid = pid
        self.prefect_version: str | None = None  # the server's, once it answers

    def use(self, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
        import prefect.context

        url = wait_until_ready(self.directory, self.pid, timeout_s)
        self.prefect_version = (_read_record(self.directory) or {}).get("prefect_version")
        os.environ["PREFECT_API_URL"] = url  # for the engine's worker processes too
        prefect.context.refresh_global_settings_context()
        return url

    def flow_settings(self) -> contextlib.AbstractContextManager[Any]:
        """Prefect's settings for this process's flow runs on the shared server, what Prefect
        offers for a server known to the client (start-up time: benchmarks/startup.py):

        - no flow run heartbeats. A heartbeat lets a server's automations mark a run whose
          process died as crashed; the shared server runs none of its services, so nothing reads
          them, and the flow engine waits for its heartbeat thread, which sleeps in steps of 1 s,
          at the end of every flow run: half a second of a command with nothing to do, on
          average. No environment variable can say "none" (PREFECT_FLOWS_HEARTBEAT_FREQUENCY
          takes 30 s or more), hence settings for the run rather than the environment;
        - no CSRF token request before a client's first change (the server runs without CSRF
          protection), and no version handshake when this Prefect started the server."""
        import prefect
        from prefect.settings import (
            PREFECT_CLIENT_CSRF_SUPPORT_ENABLED, PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings,
        )

        updates: dict[Any, Any] = {
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
            # The server runs without CSRF protection (serve): a client's first change would
            # otherwise ask for a token first and be told so.
            PREFECT_CLIENT_CSRF_SUPPORT_ENABLED: False,
        }
        if self.prefect_version == prefect.__version__:  # started by this Prefect: no version handshake
            updates[PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED] = False
        return temporary_settings(updates=updates)


def ensure_server(directory: Path, idle_s: float, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
    """The API URL of the server serving `directory`, started first if none runs."""
    return wait_until_ready(directory, find_or_start(directory, idle_s), timeout_s)


def find_or_start(directory: Path, idle_s: float) -> int:
    """The pid of the server serving `directory` (answering or still starting), spawned now
    if there is none. A lock file keeps concurrent commands from starting two."""
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / "lock"):
        record = _read_record(directory)
        if record is not None and process_alive(record["pid"]):
            if "api_url" in record and running_server(directory) is not None:
                return record["pid"]
            age_s = time.time() - (directory / SERVER_FILE).stat().st_mtime
            if "api_url" not in record and age_s < STARTUP_TIMEOUT_S:
                return record["pid"]  # still starting
        log = open(directory / "server.log", "ab")  # noqa: SIM115 - the child owns it from here
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.local_server", "--dir", str(directory), "--idle", str(idle_s)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        log.close()
        _write_record(directory, {"pid": process.pid})  # starting: the server adds its api_url
        return process.pid


def wait_until_ready(directory: Path, pid: int, timeout_s: float) -> str:
    """The api_url of server `pid` once it answers; a one-line error if it exits or is late."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = running_server(directory)
        if record is not None and record["pid"] == pid:
            return record["api_url"]
        if not process_alive(pid):
            raise ServerError(f"the local Prefect server (pid {pid}) exited; see {directory / 'server.log'}")
        time.sleep(0.1)
    raise ServerError(f"the local Prefect server (pid {pid}) did not answer within {timeout_s:.0f} s; "
                       f"see {directory / 'server.log'}")


def running_server(directory: Path) -> dict[str, Any] | None:
    """server.json's record if its process is alive and its API answers, else None."""
    record = _read_record(directory)
    if record is None or "api_url" not in record or not process_alive(record["pid"]):
        return None
    try:
        with urllib.request.urlopen(f"{record['api_url']}/health", timeout=5) as response:
            return record if response.status == 200 else None
    except OSError:
        return None


def _read_record(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def stop_server(directory: Path, timeout_s: float = 30.0) -> int | None:
    """Stop the server serving `directory`; its pid, or None if none ran."""
    record = _read_record(directory)
    if record is None or not process_alive(record["pid"]):
        return None
    stop_process_tree({"pid": record["pid"]}, signal.SIGTERM, timeout_s)
    return record["pid"]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------- the server process


class IdleClock:
    """ASGI middleware: when the last request or websocket ended, and how many are open."""

    def __init__(self, app: Any):
        self.app = app
        self.open = 0
        self.last = time.monotonic()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        self.open += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.open -= 1
            self.last = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.open else time.monotonic() - self.last


def serve(directory: Path, idle_s: float) -> None:
    """Run Prefect's API on 127.0.0.1 until idle for idle_s (or SIGTERM); server.json says
    where while it answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    os.environ.update({
        "PREFECT_HOME": str(directory / "prefect"),  # its database and settings, no one else's
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{directory / 'prefect' / 'prefect.db'}",
        "PREFECT_UI_ENABLED": "true",  # the runs of every command, at http://127.0.0.1:<port> (wsss server status)
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "false",  # loopback only; clients skip the token (flow_settings)
        "PREFECT_LOGGING_LEVEL": "WARNING",
    })
    os.environ.pop("PREFECT_API_URL", None)
    import uvicorn
    from prefect import __version__ as prefect_version
    from prefect.server.api.server import create_app

    # the API and UI without the server's services (scheduler, late runs...), as Prefect's
    # temporary server runs it: commands need none of them
    clock = IdleClock(create_app(webserver_only=True, final=True))
    server = uvicorn.Server(uvicorn.Config(clock, log_level="error", lifespan="on"))
    record = {"pid": os.getpid(), "port": port, "api_url": f"http://127.0.0.1:{port}/api", "ui_url": f"http://127.0.0.1:{port}",
              "idle_s": idle_s, "prefect_version": prefect_version}

    async def watch() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.05)
        while not server.should_exit:
            written = _read_record(directory)
            if written is not None and written["pid"] != record["pid"]:
                server.should_exit = True  # another server serves this directory now
            elif written != record:  # (again, if the starting command wrote after it)
                _write_record(directory, record)
            await asyncio.sleep(min(1.0, idle_s / 4))
            if clock.idle_for() >= idle_s:
                server.should_exit = True

    async def main() -> None:
        await asyncio.gather(server.serve(sockets=[sock]), watch())

    try:
        asyncio.run(main())
    finally:
        _remove_record(directory, record["pid"])


def _write_record(directory: Path, record: dict[str, Any]) -> None:
    from wsss_core.store.files import write_json_atomic

    write_json_atomic(directory / SERVER_FILE, record)


def _remove_record(directory: Path, pid: int) -> None:
    record = _read_record(directory)
    if record is not None and record["pid"] == pid:
        with contextlib.suppress(OSError):
            (directory / SERVER_FILE).unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The shared local Prefect server of wsss commands (started by them).")
    parser.add_argument("--dir", type=Path, required=True, help="state directory: database, log, server.json")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_S, help="stop after this many seconds without a request")
    args = parser.parse_args(argv)
    serve(args.dir, args.idle)


if __name__ == "__main__":
    main()
