"""The dask engine: the LocalCluster it starts itself must listen on the loopback interface only."""

from __future__ import annotations

import os

import psutil

from flows.common import EngineConfig, local_cluster_kwargs, make_task_runner


def _process_tree(pids: set[int]) -> set[int]:
    tree = set(pids)
    for pid in pids:
        try:
            tree |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    return tree


def _listeners(pids: set[int]) -> list[tuple[int, str, int]]:
    tree = _process_tree(pids)
    return [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.pid in tree
    ]


def _wildcard_listeners(pids: set[int]) -> list[tuple[int, str, int]]:
    """LISTEN sockets of the pids (and their children) on any address but 127.0.0.1 / ::1."""
    return [entry for entry in _listeners(pids) if entry[1] not in ("127.0.0.1", "::1")]


def test_local_cluster_listens_on_loopback_only():
    """The LocalCluster that make_task_runner's DaskTaskRunner starts: scheduler, its HTTP server
    (dashboard), nannies, workers and their HTTP servers all bind 127.0.0.1."""
    runner = make_task_runner(EngineConfig(engine="dask", workers=2))
    assert runner.cluster_kwargs == local_cluster_kwargs(2)
    with runner:
        runner.client.wait_for_workers(2, timeout=60)  # the cluster starts with the client, at the first submit
        cluster = runner._cluster
        worker_pids = set(runner.client.run(os.getpid).values())
        listening = _listeners({os.getpid()})
        wildcard = _wildcard_listeners({os.getpid()})
        dashboard_port = cluster.scheduler.http_server.port
    assert wildcard == [], f"listening beyond 127.0.0.1: {wildcard} (all: {listening})"
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert dashboard_port != 8787  # a free port, not the shared default
    assert (os.getpid(), "127.0.0.1", dashboard_port) in listening
    assert len(worker_pids) == 2 and worker_pids <= {pid for pid, _, _ in listening}, (worker_pids, listening)
