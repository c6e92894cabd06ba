"""Segmentation rounds end to end through their Prefect flow, on tiny images."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from flows.common import Execution, flow_result
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from flows.segment import segment_flow
from tasks.segmentation import segmentation_checkpoint
from wsss_core.confidence import read_confidence
from wsss_core.export import export_masks
from wsss_core.requests import GraphNetRequest, SegmentationRequest
from wsss_core.store import Workspace
from wsss_core.tracking import tracking_uri
from wsss_core.checkpoints import read_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
LABELS = "pseudo/labelprop-scribbles"
# ResNet-18 DeepLabV3 from scratch, crops of 48, batches of 4, one epoch a round.
TINY = {"train.epochs": 1, "train.crop_size": 48, "train.batch_size": 4, "train.weights": "none"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def workspace(synthetic_root, tmp_path, monkeypatch):
    """The tiny dataset's train and val splits with label-propagation pseudo masks (fast, no CNN)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "ws"
    execution = Execution(batch_size=4, progress=False)
    ingest_flow(root=str(synthetic_root), workspace=str(path), split=["train", "val"], execution=execution)
    flow_result(graphnet_flow, workspace=str(path), request=GraphNetRequest(propagation="label-propagation", evaluate=False, log_to_mlflow=False), execution=execution)
    return path


def run_rounds(workspace, rounds=2, overrides=None, **kwargs):
    return flow_result(segment_flow, workspace=str(workspace), request=SegmentationRequest(labels="labelprop-scribbles", rounds=rounds, preset="small", overrides={**TINY, **(overrides or {})}, device="cpu", train_threads=1, **kwargs), execution=Execution(batch_size=4, progress=False))


def test_rounds_train_on_the_train_split_predict_every_image_and_are_exportable(workspace, tmp_path):
    ws = Workspace(workspace)
    train, every = set(ws.split_ids("train")), set(ws.image_ids())
    assert train and train != every

    # one spawned loader worker: the form that works inside a process running Prefect
    spawned = {"train.num_workers": 1}
    first = run_rounds(workspace, overrides=spawned)
    done = {s.stage: s.done for s in first.summaries}
    assert done == {
        "train-segmentation/labelprop-scribbles/round-1": len(train), f"{LABELS}/round-1": len(every),
        "train-segmentation/labelprop-scribbles/round-2": len(train), f"{LABELS}/round-2": len(every),
    }
    assert first.ok and all(report.trained for report in first.trainings.values())
    assert ws.done_ids("train-segmentation/labelprop-scribbles/round-2") == train  # round 2 learnt round 1's train labels
    assert ws.stage_meta("train-segmentation/labelprop-scribbles/round-2")["upstream"].keys() == {"ingest", f"{LABELS}/round-1"}
    for k in (1, 2):
        checkpoint = read_checkpoint(workspace / segmentation_checkpoint(f"train-segmentation/labelprop-scribbles/round-{k}"))
        assert checkpoint["meta"]["arch"] == "deeplabv3_resnet18" and checkpoint["epoch"] == 1
    for image_id in every:
        mask = ws.read_array(f"{LABELS}/round-2", image_id)
        assert mask.dtype == np.uint8 and mask.shape == ws.array_shape("images", image_id)[:2]
        assert mask.max() < len(ws.classes)
    scores = read_confidence(ws, f"{LABELS}/round-2")  # from the softmax the prediction was made from
    assert set(scores) == every and all(0 <= v <= 1 for v in scores.values())

    # evaluated: round 0 and every round
    assert set(first.evaluation) == {LABELS, f"{LABELS}/round-1", f"{LABELS}/round-2"}
    # exportable like any pseudo masks
    written = export_masks(ws, f"{LABELS}/round-1", tmp_path / "png")
    assert sorted(p.stem for p in written) == sorted(every)
    # remembered for retry-failed
    assert ws.requests()["segment-labelprop-scribbles"]["flow"] == "flows.segment:segment_flow"

    # MLflow: each round's training with its per-epoch loss and the model
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trained = [r for r in runs if r.data.tags.get("stage", "").startswith("train-segmentation/")]
    assert len(trained) == 2 and all(r.info.status == "FINISHED" for r in trained)
    assert all(client.get_metric_history(r.info.run_id, "loss") for r in trained)

    # a second run trains and predicts nothing
    second = run_rounds(workspace, overrides=spawned, evaluate=False)
    assert all(s.done == 0 for s in second.summaries), [s.line() for s in second.summaries]
    # a third round trains only round 3
    third = run_rounds(workspace, rounds=3, overrides=spawned, evaluate=False)
    assert {s.stage: s.done for s in third.summaries if s.done} == {
        "train-segmentation/labelprop-scribbles/round-3": len(train), f"{LABELS}/round-3": len(every),
    }


def test_a_killed_training_resumes_from_its_checkpoint(workspace, prefect_harness):
    """`wsss segment` killed mid-training (SIGKILL: no handler runs), then run again."""
    import prefect.settings

    stage = "train-segmentation/labelprop-scribbles/round-1"
    checkpoint = workspace / segmentation_checkpoint(stage)
    settings = ["--set", "train.epochs=6", *(f"--set={k}={v}" for k, v in TINY.items() if k != "train.epochs")]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value()}
    command = [sys.executable, "-m", "cli", "segment", "-w", str(workspace), "--labels", "labelprop-scribbles",
               "--device", "cpu", "--train-threads", "1", "--no-progress", "--no-evaluate", *settings]
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while not (checkpoint.exists() and read_checkpoint(checkpoint)["epoch"] >= 1):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 180 s"
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    killed_at = read_checkpoint(checkpoint)["epoch"]
    assert 1 <= killed_at < 6

    resumed = run_rounds(workspace, rounds=1, overrides={"train.epochs": 6}, until="round-1", evaluate=False)
    report = resumed.trainings[stage]
    assert report.trained and report.resumed_from_epoch == killed_at
    assert read_checkpoint(checkpoint)["epoch"] == 6 and len(report.history) == 6
    # the killed process's MLflow run is marked FAILED by the run that took the training up
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.stage = '{stage}'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def test_bad_requests_are_one_line_errors(workspace):
    runner = CliRunner()
    result = runner.invoke(app, ["segment", "--help"])
    assert result.exit_code == 0 and "--rounds" in result.output and "--labels" in result.output
    result = runner.invoke(app, ["segment", "-w", str(workspace), "--labels", "gcn-boxes"])
    assert result.exit_code == 2 and "pseudo/labelprop-scribbles" in result.output  # names what there is
    result = runner.invoke(app, ["segment", "-w", str(workspace), "--labels", "labelprop-scribbles", "--train-split", "trainaug"])
    assert result.exit_code == 2 and "no such split" in result.output
