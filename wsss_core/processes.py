"""Long-running child processes that outlive the command that started them: start one in its
own process group with its output in a log file, record it, check it still is the process
recorded (a pid can be reused), and stop it with everything it spawned.

Shared by the local Prefect server (flows/local_server.py) and `wsss stack` (wsss_core/stack.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil


def process_alive(pid: int) -> bool:
    """The process runs (an exited one that its parent has not reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: the signal's answer stands


def start_process(
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """Start `command` in a new session (its own process group), stdout and stderr appended to
    `log_path`; `user`: run it as that user (and its group). Returns its record: pid, create_time."""
    identity: dict[str, Any] = {}
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command), cwd=cwd, env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **identity,
        )
    return {"pid": process.pid, "create_time": _create_time(process.pid)}


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def recorded_process(record: Mapping[str, Any]) -> psutil.Process | None:
    """The running process a record names: same pid and same start time, not a zombie."""
    pid = record.get("pid")
    if not isinstance(pid, int) or not process_alive(pid):
        return None
    try:
        process = psutil.Process(pid)
        if record.get("create_time") is not None and abs(process.create_time() - record["create_time"]) > 0.05:
            return None  # the pid was reused by another process
        return process
    except psutil.Error:
        return None


def process_tree(process: psutil.Process) -> list[psutil.Process]:
    """The process and every descendant it has now."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def stop_process_tree(
    record: Mapping[str, Any], sig: int = signal.SIGTERM, timeout_s: float = 20.0
) -> list[int]:
    """Stop the recorded process, its process group and every descendant (a descendant may
    have left the group): `sig` first, SIGKILL to whatever is left after `timeout_s`.
    Returns the pids it found; an empty list when the process no longer ran."""
    root = recorded_process(record)
    if root is None:
        return []
    tree = process_tree(root)
    _signal_all(root.pid, tree, sig)
    gone, alive = psutil.wait_procs(tree, timeout=timeout_s)
    if alive:
        tree = alive + [p for p in process_tree(root) if p not in alive] if root.is_running() else alive
        _signal_all(root.pid, tree, signal.SIGKILL)
        psutil.wait_procs(tree, timeout=10)
    return [p.pid for p in gone + alive]


def _signal_all(group: int, processes: list[psutil.Process], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (another process may take it before it is bound)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def listeners(processes: Iterator[psutil.Process] | list[psutil.Process]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket these processes listen on."""
    found = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found.append((process.pid, connection.laddr.ip, connection.laddr.port))
    return found
