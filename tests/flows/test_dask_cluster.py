"""The dask engine: on a real external cluster (separate scheduler and worker processes), and
the LocalCluster it starts itself, which must listen on the loopback interface only."""

from __future__ import annotations

import os
import time

import psutil

from flows.common import Execution, engine_session, local_cluster_kwargs, make_task_runner
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from wsss_core.requests import GraphNetRequest
from wsss_core.store import Workspace

BATCH_SIZE = 4
OUTPUTS = ("superpixels", "graphs", "nodes/gcn-scribbles", "pseudo/gcn-scribbles", "pseudo/nearest-scribbles")


def _run_graphnet(execution: Execution, synthetic_root, workspace: str):
    """Ingest and the whole GraphNet path on the engine, as a deployment would run them."""
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=execution)
    state = graphnet_flow(workspace=workspace, request=GraphNetRequest(preset="offline", overrides={"gcn": {"pretrain_epochs": 20}}, evaluate=False), execution=execution, return_state=True)
    return state.result(), state.state_details.flow_run_id


def _task_runs(flow_run_id, expected: int, timeout: float = 30):
    """The flow run's task runs as the API has them; the server records them from events, a bit later."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            done = [r for r in runs if r.state and r.state.is_final()]
            if len(done) >= expected or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def test_graphnet_on_external_dask_cluster_matches_threads(
    dask_scheduler_address, dask_cluster_processes, synthetic_root, tmp_path
):
    """Byte-identical arrays to the threads engine; batches run on the cluster's workers and
    their task runs reach this session's Prefect API."""
    from distributed import Client, get_task_stream

    address, processes = dask_scheduler_address, dask_cluster_processes[1]
    threads = Execution(engine="threads", workers=2, batch_size=BATCH_SIZE, progress=False)
    threads_run, _ = _run_graphnet(threads, synthetic_root, str(tmp_path / "t"))
    with Client(address) as client, get_task_stream(client=client) as stream:
        workers = set(client.scheduler_info(n_workers=-1)["workers"])
        dask = Execution(engine="dask", dask_address=address, batch_size=BATCH_SIZE, progress=False)
        dask_run, flow_run_id = _run_graphnet(dask, synthetic_root, str(tmp_path / "d"))

    t_ws, d_ws = Workspace(tmp_path / "t"), Workspace(tmp_path / "d")
    ids = d_ws.image_ids()
    assert threads_run.ok and dask_run.ok and ids == t_ws.image_ids() and ids
    for stage in OUTPUTS:
        assert d_ws.done_ids(stage) == set(ids), stage
        for image_id in ids:
            names = ("node_features", "edges", "weights") if stage == "graphs" else (None,)
            for name in names:
                expected, actual = t_ws.read_array(stage, image_id, name), d_ws.read_array(stage, image_id, name)
                assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), (stage, image_id)
                assert actual.tobytes() == expected.tobytes(), (stage, image_id)

    # every batch of every per-image stage (and the GCN fit) ran on the external workers
    batches = sum(len(s.failed) + s.done > 0 for s in dask_run.summaries)
    ran_on = [t["worker"] for t in stream.data]
    assert len(ran_on) >= batches and set(ran_on) <= workers, (ran_on, workers)
    # and the workers reported them to this session's Prefect API
    runs = _task_runs(flow_run_id, batches)
    assert {r.state.type.value for r in runs} == {"COMPLETED"}, [(r.name, r.state) for r in runs]

    # every socket the cluster's processes listen on is on the loopback interface
    assert _wildcard_listeners({p.pid for p in processes}) == []


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
    runner = make_task_runner(Execution(engine="dask", workers=2))
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


def _tree_listeners() -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP socket of this process and its descendants, read per
    process (no system-wide scan, which needs root on some systems)."""
    me = psutil.Process()
    found = []
    for process in [me, *me.children(recursive=True)]:
        try:
            connections = process.net_connections("inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [(process.pid, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def test_nothing_this_session_starts_listens_beyond_loopback():
    """A dask engine session (its LocalCluster, dashboard included) and the temporary Prefect server
    the tests run against (a child process, as for a `wsss` command without PREFECT_API_URL):
    every listener of this process tree is on 127.0.0.1 or ::1, never 0.0.0.0 or ::."""
    from urllib.parse import urlparse

    from prefect.settings import PREFECT_API_URL

    with engine_session(Execution(engine="dask", workers=1)) as runner:
        runner.client.wait_for_workers(1, timeout=60)  # the cluster starts with the client
        dashboard_port = runner._cluster.scheduler.http_server.port
        listening = _tree_listeners()
    outside = [entry for entry in listening if entry[1] not in ("127.0.0.1", "::1")]
    assert outside == [], f"listening beyond loopback: {outside} (all: {listening})"
    ports = {port for _, _, port in listening}
    assert dashboard_port in ports
    api = urlparse(PREFECT_API_URL.value())
    if api.hostname in ("127.0.0.1", "localhost"):  # the harness's own server, not one set from outside
        assert api.port in ports, (api.port, listening)
