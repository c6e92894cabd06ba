"""Stage locks: one process at a time runs a dataset-level stage (a training, the shared GCN fit).

Two commands on one workspace at once (two `wsss segment`, a `wsss run` beside a scheduled
deployment) would otherwise both train the same network into the same checkpoint, and the
model left on disk need not be the one that made the stored masks. The flow process running
a dataset-level stage (flows/pipeline.py run_pipeline) holds ``locks/<stage>.lock`` while it
decides whether the model is fitted, runs the stage's task (on whatever engine) and marks
the images done; the second run waits, saying who holds it, then finds the model done and
fits nothing.

``fcntl.flock`` on a file of the workspace: held by an open file, so it also keeps apart two
runs in threads of one process; released by the kernel when its holder dies, even by
SIGKILL, so a killed run never leaves a stale lock (the next run resumes its checkpoint).
flock does not work between machines over NFS: runs started on several machines that share
one workspace are not kept apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

LOCKS = "locks"


def describe_holder(text: str) -> str:
    """'pid 123 on host since 2026-12-07 09:50:01 UTC' from a lock file's content ('' when unknown)."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return ""


@contextlib.contextmanager
def hold_file_lock(path: Path, what: str, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing); waits as long as another holds it.

    Before waiting, ``on_wait`` gets one line naming the holder (pid, host, since when), which
    the holder writes into the file once it has the lock and clears before letting it go.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait(f"{what}: waiting for {_read_holder(handle) or 'another process'} (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            _rewrite(handle, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
            yield
        finally:
            _rewrite(handle, "")
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_holder(handle, attempts: int = 10) -> str:
    """The holder's description; it writes it just after taking the lock, so wait a moment for it."""
    for _ in range(attempts):
        handle.seek(0)
        holder = describe_holder(handle.read())
        if holder:
            return holder
        time.sleep(0.05)
    return ""


def _rewrite(handle, text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()


class Locks:
    """The workspace's stage locks (mixin of Workspace; needs ``path``)."""

    path: Path

    def lock_path(self, stage: str) -> Path:
        return self.path / LOCKS / f"{stage}.lock"

    def stage_lock(self, stage: str, on_wait: Callable[[str], None]) -> contextlib.AbstractContextManager[None]:
        """Held while a dataset-level stage runs: one process of this machine at a time (module docstring)."""
        return hold_file_lock(self.lock_path(stage), stage, on_wait)
