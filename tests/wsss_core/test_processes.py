"""Background processes: started in their own group, recognised by pid and start time, stopped
with everything they spawned (real processes, no servers)."""

from __future__ import annotations

import signal
import time

import psutil

from wsss_core.processes import free_port, listeners, port_open, process_alive, recorded_process, start_process, stop_process_tree

# A parent with two children, one of which left the group (as PostgreSQL's backends and a
# Prefect worker's flow runs may): stopping the parent's group alone would leave it running.
TREE = ["sh", "-c", "sleep 300 & setsid sleep 300 & wait"]


def _tree(pid: int, expected: int, timeout: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        found = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_stop_process_tree_stops_the_process_and_every_descendant(tmp_path):
    record = start_process(TREE, tmp_path / "tree.log")
    processes = _tree(record["pid"], 3)
    assert len(processes) == 3
    stopped = stop_process_tree(record, signal.SIGTERM, timeout_s=10)
    assert set(stopped) == {p.pid for p in processes}
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert stop_process_tree(record) == []  # no longer running: nothing to stop


def test_a_record_whose_pid_was_reused_names_no_process(tmp_path):
    record = start_process(["sleep", "300"], tmp_path / "sleep.log")
    try:
        assert recorded_process(record) is not None and process_alive(record["pid"])
        reused = {**record, "create_time": record["create_time"] - 100}  # another process with that pid
        assert recorded_process(reused) is None
        assert stop_process_tree(reused) == [] and process_alive(record["pid"])
    finally:
        stop_process_tree(record, timeout_s=5)


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    record = start_process(["sh", "-c", "trap '' TERM; sleep 300 & wait"], tmp_path / "stubborn.log")
    _tree(record["pid"], 2)
    started = time.monotonic()
    stop_process_tree(record, signal.SIGTERM, timeout_s=1)
    assert time.monotonic() - started < 10 and recorded_process(record) is None


def test_listeners_and_ports(tmp_path):
    port = free_port()
    record = start_process(["python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)], tmp_path / "http.log")
    try:
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listeners([recorded_process(record)]) == [(record["pid"], "127.0.0.1", port)]
    finally:
        stop_process_tree(record, timeout_s=5)
    assert not port_open("127.0.0.1", port)
