"""Stage locks (wsss_core/store/locks.py): one holder at a time, the waiter told who holds it, and
a holder killed by SIGKILL leaves no stale lock."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from wsss_core.store import Workspace
from wsss_core.store.locks import hold_file_lock

REPO_ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
from wsss_core.store import Workspace

with Workspace(sys.argv[1]).stage_lock("train-segmentation/gcn-scribbles/round-1", on_wait=print):
    print("holding", flush=True)
    time.sleep(300)
"""


def test_a_second_holder_waits_naming_the_first_and_a_killed_holder_frees_the_lock(tmp_path):
    ws = Workspace(tmp_path / "ws")
    stage = "train-segmentation/gcn-scribbles/round-1"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws.path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        waits, acquired = [], threading.Event()

        def second() -> None:
            with ws.stage_lock(stage, on_wait=waits.append):
                acquired.set()

        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)
        assert not acquired.is_set()
        [line] = waits
        assert line.startswith(f"{stage}: waiting for pid {holder.pid} on {socket.gethostname()} since ")
        assert line.endswith(f"(lock {ws.path / 'locks' / 'train-segmentation/gcn-scribbles/round-1.lock'})")
        holder.send_signal(signal.SIGKILL)  # no clean-up: the kernel drops its flock
        waiter.join(timeout=30)
        assert acquired.is_set()
    finally:
        holder.kill()
        holder.wait()


def test_one_process_holds_it_alone_and_an_uncontended_lock_is_silent(tmp_path):
    path, events, waits = tmp_path / "locks" / "x.lock", [], []

    def hold(name: str) -> None:
        with hold_file_lock(path, "x", waits.append):
            events.append(f"{name} in")
            time.sleep(0.3)
            events.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    assert len(waits) == 1 and f"pid {os.getpid()}" in waits[0]  # the same process, another open file
    with hold_file_lock(path, "x", waits.append):
        assert len(waits) == 1
    assert path.read_text() == ""  # the holder's description goes with it
