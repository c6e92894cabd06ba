"""The AffinityNet (PSA) path end to end through its Prefect flow, on tiny images."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tasks.affinitynet as t
from flows.affinitynet import affinitynet_flow, affinitynet_pipeline
from flows.common import Execution, flow_result
from cli import app
from flows.ingest import ingest_flow
from flows.retry import retry_failed_flow
from flows.segment import segment_flow
from wsss_core.psa.affinity import AffinityConfig
from wsss_core.psa.affinitynet import AffinityTrainConfig
from wsss_core.weights import WeightsRecord
from wsss_core.psa.cam import CamTrainConfig
from wsss_core.checkpoints import read_checkpoint
from wsss_core.data.fingerprints import file_sha256
from wsss_core.crf import CRFConfig
from wsss_core.config import config_to_dict
from wsss_core.confidence import read_confidence
from wsss_core.psa.config import AffinityNetPathConfig, CamInferenceConfig, resolve_weights
from wsss_core.psa.masks import RwMaskConfig
from wsss_core.requests import AffinityNetRequest, SegmentationRequest
from wsss_core.store import AFFINITYNET_CHECKPOINT, CAM_CHECKPOINT
from wsss_core.psa.random_walk import RandomWalkConfig
from wsss_core.store import Workspace
from wsss_core.tracking import tracking_uri

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_CRF = CRFConfig(iterations=3)


def tiny_config(cam_epochs: int = 1) -> AffinityNetPathConfig:
    """ResNet-18 from scratch, one epoch each, crops of 64, one CAM scale, short CRFs."""
    return AffinityNetPathConfig(
        cam_train=replace(CamTrainConfig.small(), epochs=cam_epochs, batch_size=4, crop_size=64, rescale_long_side=None),
        cam_inference=CamInferenceConfig(scales=(1.0,), flip=True),
        affinity_labels=AffinityConfig(crf=QUICK_CRF),
        affinity_train=replace(AffinityTrainConfig.small(), epochs=1, batch_size=4, crop_size=64),
        affinity_init="cam",
        random_walk=RandomWalkConfig(log_t=5),
        rw_crf=QUICK_CRF,
    )


def summaries(run) -> dict:
    return {s.stage: s for s in run.summaries}


@pytest.fixture
def workspace(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "ws"
    ingest_flow(root=str(synthetic_root), workspace=str(path), execution=Execution(progress=False))
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_flow(workspace, config, **kwargs):
    """The flow with the tiny config given as overrides by name, as a deployment would pass them."""
    return flow_result(affinitynet_flow, workspace=str(workspace), request=AffinityNetRequest(preset="small", overrides=config_to_dict(config), device="cpu", train_threads=1, **kwargs), execution=Execution(batch_size=4, progress=False))


def test_tiny_training_run_end_to_end_skips_when_done_and_recomputes_only_the_walk(workspace, tmp_path):
    ws = Workspace(workspace)
    ids = ws.image_ids()
    bad = ids[0]
    original_tags = ws.read_array("tags", bad)
    ws.write_array("tags", bad, np.array([99], dtype=np.int32))  # a class the dataset does not have
    good = [i for i in ids if i != bad]

    first = run_flow(workspace, tiny_config())
    stages = summaries(first)
    assert list(stages) == [
        "train-cam", "cams", "pseudo/cam", "affinity-labels", "train-affinitynet", "rw", "pseudo/rw", "pseudo/rw-crf",
    ]
    # the bad image is recorded (in training and in the CAM stage) and the rest goes on
    assert set(stages["train-cam"].failed) == {bad} and stages["train-cam"].done == len(good)
    assert set(stages["cams"].failed) == {bad} and stages["cams"].done == len(good)
    assert {r.image_id for r in ws.failures("cams")} == {bad}
    assert "99" in ws.failures("train-cam")[0].message
    for stage in ["pseudo/cam", "affinity-labels", "rw", "pseudo/rw", "pseudo/rw-crf"]:
        assert stages[stage].ok and stages[stage].done == len(good), stage
        assert ws.done_ids(stage) == set(good), stage
    assert not first.ok  # the CLI exits 1

    image_id = good[0]
    height, width = ws.array_shape("images", image_id)[:2]
    tags = ws.read_array("tags", image_id)
    cams = ws.read_array("cams", image_id, "scores")
    assert cams.dtype == np.float16 and cams.shape == (len(tags), height, width)
    assert np.array_equal(ws.read_array("cams", image_id, "classes"), tags)
    assert np.allclose(cams.reshape(len(tags), -1).max(axis=1), 1.0, atol=1e-3)  # per-class max-normalised
    labels = ws.read_array("affinity-labels", image_id)
    assert labels.shape == (height, width) and set(np.unique(labels)) <= {0, 255, *tags.tolist()}
    walked = ws.read_array("rw", image_id, "scores")
    assert walked.shape == (len(tags) + 1, -(-height // 8), -(-width // 8))
    for stage in ["pseudo/cam", "pseudo/rw", "pseudo/rw-crf"]:
        mask = ws.read_array(stage, image_id)
        assert mask.dtype == np.uint8 and mask.shape == (height, width)
        assert set(np.unique(mask)) <= {0, *tags.tolist()}, stage
        scores = read_confidence(ws, stage)  # every done mask carries its confidence
        assert set(scores) == set(good) and all(0 <= v <= 1 for v in scores.values()), stage

    # checkpoints where the GraphNet path looks for the classifier, finished
    for path, kind in [(CAM_CHECKPOINT, "CamNet"), (AFFINITYNET_CHECKPOINT, "AffinityNet")]:
        checkpoint = read_checkpoint(workspace / path)
        assert checkpoint["meta"]["kind"] == kind and checkpoint["epoch"] == 1

    # MLflow: one run for the flow run; nested under it both trainings (readable params,
    # per-epoch metrics, the model, the config) and the evaluation's run per mask set
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace))
    runs = {r.info.run_name: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    parent = [r for name, r in runs.items() if name.startswith("affinitynet ")]
    assert len(parent) == 1 and parent[0].data.tags["prefect.flow_run_name"] in parent[0].info.run_name
    parent = parent[0]
    assert parent.data.params["preset"] == "small" and parent.data.params["random_walk.log_t"] == "5"
    assert parent.data.params["walk.steps"] == "32" and parent.data.params["cam_train.epochs"] == "1"
    assert parent.data.tags["workspace"] == str(workspace.resolve()) and parent.data.tags["dataset"]
    cam_run = runs["train-cam"]
    assert cam_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    params = cam_run.data.params
    assert params["network"] == "cam" and params["backbone"] == "resnet18" and params["preset"] == "small"
    assert params["weights.used"] == "none" and params["epochs"] == "1" and params["crop_size"] == "64"
    assert params["n_images"] == str(len(good))
    assert not any("key" in name or "time" in name for name in params)  # keys go in tags
    assert cam_run.data.tags["stage_key"] == ws.stage_key("train-cam") and cam_run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(cam_run.info.run_id, "loss")] == [1]
    assert [m.step for m in client.get_metric_history(cam_run.info.run_id, "mAP")] == [1]
    # the model is stored once: in the workspace, which the run's model.json names by path and hash
    assert [a.path for a in client.list_artifacts(cam_run.info.run_id, "model")] == ["model/model.json"]
    reference = json.loads(Path(client.download_artifacts(cam_run.info.run_id, "model/model.json", str(tmp_path))).read_text())
    checkpoint = workspace / CAM_CHECKPOINT
    assert reference == {"path": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint), "bytes": checkpoint.stat().st_size}
    assert "optimizer" not in read_checkpoint(checkpoint)  # a finished training keeps no resume state
    assert "config.json" in {a.path for a in client.list_artifacts(cam_run.info.run_id)}
    assert client.get_metric_history(runs["train-affinitynet"].info.run_id, "loss")
    assert set(first.evaluation) == {"pseudo/cam", "pseudo/rw", "pseudo/rw-crf"}
    evaluation = [r for name, r in runs.items() if name.startswith("evaluate ")][0]
    assert evaluation.data.tags["mlflow.parentRunId"] == parent.info.run_id
    rw = runs["pseudo/rw train"]
    assert rw.data.tags["mlflow.parentRunId"] == evaluation.info.run_id
    assert rw.data.metrics["miou"] == pytest.approx(100 * first.evaluation["pseudo/rw"]["splits"]["train"]["miou"])
    assert rw.data.params["method"] == "rw" and rw.data.params["preset"] == "small" and rw.data.params["round"] == "0"

    # offline, a segmentation round's backbone starts from the CAM classifier just trained (it fits
    # the small preset's ResNet-18), and trains again when that classifier changes
    rounds = flow_result(segment_flow, workspace=str(workspace), request=SegmentationRequest(labels="rw", rounds=1, preset="small", device="cpu", train_threads=1, overrides={"train.epochs": 1, "train.crop_size": 48, "train.batch_size": 4}, evaluate=False, log_to_mlflow=False), execution=Execution(batch_size=4, progress=False))
    used = rounds.notes["weights"]["segmentation"]
    assert used["fallback"] and used["used"] == str(workspace / CAM_CHECKPOINT) and used["backbone"] == "resnet18"
    assert rounds.trainings["train-segmentation/rw/round-1"].trained
    assert ws.stage_meta("train-segmentation/rw/round-1")["config"]["backbone_from"]["stage"] == "train-cam"

    # a second run finds everything done and trains nothing
    second = run_flow(workspace, tiny_config(), evaluate=False)
    assert all(s.done == 0 for s in second.summaries), [s.line() for s in second.summaries]
    assert not any(report.trained for report in second.trainings.values())
    assert summaries(second)["pseudo/rw"].skipped == len(good)

    # another random-walk config recomputes the walk and its masks, nothing before
    other_walk = replace(tiny_config(), random_walk=RandomWalkConfig(log_t=5, beta=4.0))
    third = run_flow(workspace, other_walk, evaluate=False)
    done = {s.stage: s.done for s in third.summaries}
    assert done == {
        "train-cam": 0, "cams": 0, "pseudo/cam": 0, "affinity-labels": 0, "train-affinitynet": 0,
        "rw": len(good), "pseudo/rw": len(good), "pseudo/rw-crf": len(good),
    }

    # the bad image, fixed, is retried with the last request's settings; any late image trains
    # both networks again (their refit rule), and every image follows
    ws.write_array("tags", bad, original_tags)
    retried = flow_result(retry_failed_flow, workspace=str(workspace), execution=Execution(batch_size=4, progress=False), log_to_mlflow=False)
    assert [report.trained for report in retried.paths["affinitynet"].trainings.values()] == [True, True]
    for stage in ["cams", "pseudo/cam", "affinity-labels", "rw", "pseudo/rw", "pseudo/rw-crf"]:
        assert ws.done_ids(stage) == set(ids), stage
    assert not ws.failures("train-cam") and not ws.failures("cams")


def test_training_resumes_from_its_checkpoint_after_a_crash(workspace, monkeypatch):
    real_train = t.train_cam_classifier

    def crash_after_first_epoch(*args, on_epoch_end, **kwargs):
        def callback(epoch, metrics):
            on_epoch_end(epoch, metrics)
            raise RuntimeError("simulated crash")

        return real_train(*args, on_epoch_end=callback, **kwargs)

    monkeypatch.setattr(t, "train_cam_classifier", crash_after_first_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_flow(workspace, tiny_config(cam_epochs=2), until="train-cam")
    assert read_checkpoint(workspace / CAM_CHECKPOINT)["epoch"] == 1
    monkeypatch.setattr(t, "train_cam_classifier", real_train)

    resumed = run_flow(workspace, tiny_config(cam_epochs=2), until="train-cam")
    report = resumed.trainings["train-cam"]
    assert report.trained and report.resumed_from_epoch == 1 and len(report.history) == 2
    assert read_checkpoint(workspace / CAM_CHECKPOINT)["epoch"] == 2
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace))
    steps = [m.step for m in client.get_metric_history(report.mlflow_run_id, "loss")]
    assert steps == [1, 2]  # the resumed run carries the whole curve
    trainings = client.search_runs([client.get_experiment_by_name("wsss").experiment_id], "attributes.run_name = 'train-cam'")
    assert sorted(r.info.status for r in trainings) == ["FAILED", "FINISHED"]  # the crashed run ended FAILED

    # another training config: the old checkpoint is set aside and training starts afresh
    again = run_flow(workspace, replace(tiny_config(cam_epochs=1)), until="train-cam")
    assert again.trainings["train-cam"].resumed_from_epoch == 0 and again.trainings["train-cam"].trained
    assert (workspace / "models/cam/model.previous.pt").exists()


# Run in a process of its own: the CAM training kills that process (SIGKILL, no clean-up of any
# kind) right after its first epoch's checkpoint, as an OOM killer or a lost machine would.
KILLED_MID_TRAINING = """
import os, signal, sys
import tasks.affinitynet as t
from tests.flows.test_affinitynet import run_flow, tiny_config

real_train = t.train_cam_classifier

def killed_after_first_epoch(*args, on_epoch_end, **kwargs):
    def callback(epoch, metrics):
        on_epoch_end(epoch, metrics)
        os.kill(os.getpid(), signal.SIGKILL)

    return real_train(*args, on_epoch_end=callback, **kwargs)

t.train_cam_classifier = killed_after_first_epoch
run_flow(sys.argv[1], tiny_config(cam_epochs=2), until="train-cam")
"""


def test_a_training_killed_mid_run_resumes_and_its_mlflow_run_is_marked_failed(workspace):
    import prefect.settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(REPO_ROOT), PREFECT_API_URL=prefect.settings.PREFECT_API_URL.value())
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_TRAINING, str(workspace)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert read_checkpoint(workspace / CAM_CHECKPOINT)["epoch"] == 1
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace))
    experiment = client.get_experiment_by_name("wsss").experiment_id
    [left] = client.search_runs([experiment], "attributes.run_name = 'train-cam'")
    assert left.info.status == "RUNNING"  # nothing in the killed process could end it

    resumed = run_flow(workspace, tiny_config(cam_epochs=2), until="train-cam")
    report = resumed.trainings["train-cam"]
    assert report.trained and report.resumed_from_epoch == 1  # the checkpoint was used
    assert read_checkpoint(workspace / CAM_CHECKPOINT)["epoch"] == 2
    killed_run = client.get_run(left.info.run_id)
    assert killed_run.info.status == "FAILED" and "taken up again" in killed_run.data.tags["abandoned"]
    assert client.get_run(killed_run.data.tags["mlflow.parentRunId"]).info.status == "FAILED"  # its flow run's run
    finished = client.get_run(report.mlflow_run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["resumed_from_epoch"] == "1"
    assert [m.step for m in client.get_metric_history(report.mlflow_run_id, "loss")] == [1, 2]


def test_weights_that_cannot_be_loaded_fall_back_loudly_and_are_recorded(monkeypatch):
    failed = WeightsRecord("DEFAULT", "none", "could not load torchvision weights (offline)")
    monkeypatch.setattr("wsss_core.weights.resolve_weights", lambda backbone, weights: (None, failed))
    config, record = resolve_weights(AffinityNetPathConfig.paper())
    assert config.cam_train.weights == "none" and config.affinity_train.weights == "none"
    assert record["cam"]["fallback"] and record["cam"]["requested"] == "DEFAULT"
    assert "offline" in record["affinitynet"]["note"]


def test_cli_help_and_bad_requests():
    runner = CliRunner()
    result = runner.invoke(app, ["affinitynet", "--help"])
    assert result.exit_code == 0 and "--stride" in result.output and "--preset" in result.output
    result = runner.invoke(app, ["affinitynet", "--workspace", "/nonexistent/ws"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["affinitynet", "--workspace", "/nonexistent/ws", "--stride", "5"])
    assert result.exit_code == 2


def test_the_band_rule_reads_the_confident_labels_only_when_on():
    weights = {"cam": {}, "affinitynet": {}}
    small = AffinityNetPathConfig.small()
    rows = {row.name: row for row in affinitynet_pipeline(small, weights, crf=True).stages}
    assert "affinity-labels" not in rows["pseudo/rw"].reads and "confident" not in rows["pseudo/rw"].params
    banded = replace(small, rw_mask=RwMaskConfig(keep_confident=True))
    rows = {row.name: row for row in affinitynet_pipeline(banded, weights, crf=True).stages}
    for name in ("pseudo/rw", "pseudo/rw-crf"):
        assert "affinity-labels" in rows[name].reads and rows[name].params["confident"] == "affinity-labels"
