"""Two runs of one workspace at once: a dataset-level stage is fitted by one of them only; the other
waits on the stage's workspace lock (wsss_core/store/locks.py), saying who holds it, then reuses
the model, so the model on disk is the one every mask was made with."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import prefect.settings

from flows.common import Execution
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from wsss_core.requests import GraphNetRequest
from wsss_core.store import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]
QUIET = Execution(progress=False)
SMALL = dict(preset="offline", overrides={"gcn": {"pretrain_epochs": 40}})
GCN_FIT = "gcn-weights/gcn-scribbles"

# One run of `wsss graphnet` up to the GCN, in a process of its own. The shared GCN fit says it
# began (signals/fit-<role>); the first run's then waits for signals/go, so that the second
# surely arrives while the first holds the lock.
RUN = """
import json, sys, time
from pathlib import Path
import tasks.graphnet as t
from flows.common import Execution
from flows.graphnet import graphnet_flow
from wsss_core.requests import GraphNetRequest

workspace, signals, role = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
real_fit = t.fit_and_save

def fit_and_save(*args, **kwargs):
    (signals / f"fit-{role}").touch()
    deadline = time.monotonic() + 120
    while role == "first" and not (signals / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return real_fit(*args, **kwargs)

t.fit_and_save = fit_and_save
request = GraphNetRequest(preset="offline", overrides={"gcn": {"pretrain_epochs": 40}}, until="propagation",
                          evaluate=False, log_to_mlflow=False)
run = graphnet_flow(workspace=workspace, request=request, execution=Execution(progress=False))
print(json.dumps({s.stage: [s.done, s.skipped] for s in run.summaries}))
"""


def wait_for(condition, what: str, processes, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            assert process.poll() is None, f"{what}: a run ended first ({process.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_runs_at_once_fit_the_shared_gcn_once_the_second_waits_and_reuses_it(synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=QUIET)
    graphnet_flow(workspace=workspace, request=GraphNetRequest(**SMALL, until="seeds", evaluate=False, log_to_mlflow=False), execution=QUIET)
    signals = tmp_path / "signals"
    signals.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(REPO_ROOT), PREFECT_API_URL=prefect.settings.PREFECT_API_URL.value())
    logs = {role: tmp_path / f"{role}.err" for role in ("first", "second")}
    runs = {}

    def start(role: str) -> subprocess.Popen:
        runs[role] = subprocess.Popen([sys.executable, "-c", RUN, workspace, str(signals), role], cwd=REPO_ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=logs[role].open("w"), text=True)
        return runs[role]

    try:
        first = start("first")
        wait_for((signals / "fit-first").exists, "the first run's GCN fit", [first])
        second = start("second")
        waiting = f"{GCN_FIT}: waiting for pid {first.pid} on "
        wait_for(lambda: waiting in logs["second"].read_text(), "the second run to wait on the lock", [first, second])
        (signals / "go").touch()
        outputs = {role: run.communicate(timeout=300)[0] for role, run in runs.items()}
    finally:
        for run in runs.values():
            run.kill()
            run.wait()
    for role, run in runs.items():
        assert run.returncode == 0, logs[role].read_text()[-3000:]
    summaries = {role: json.loads(output.strip().splitlines()[-1]) for role, output in outputs.items()}
    images = len(Workspace(workspace).image_ids())
    assert summaries["first"][GCN_FIT] == [images, 0]
    assert summaries["second"][GCN_FIT] == [0, images]  # found fitted after the wait: reused
    assert not (signals / "fit-second").exists()  # the second never fitted
    [line] = [line for line in logs["second"].read_text().splitlines() if "waiting for" in line]
    assert " since " in line and "locks/gcn-weights/gcn-scribbles.lock" in line
    ws = Workspace(workspace)
    assert ws.done_ids("nodes/gcn-scribbles") == set(ws.image_ids())
    weights = sorted((ws.path / "models" / "gcn").rglob("*.npz"))
    assert len(weights) == 1 and np.load(weights[0])["image_ids"].size == images  # one model, of every image
