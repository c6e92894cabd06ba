import json

import mlflow
import numpy as np

from flows.evaluate import evaluate_flow
from flows.common import Execution
from flows.ingest import ingest_flow
from wsss_core.store import Workspace
from wsss_core.tracking import tracking_uri


def test_scores_a_stage_against_gt_and_logs_to_mlflow(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    ingest_flow(root=str(synthetic_root), workspace=str(workspace), execution=Execution(progress=False))
    ws = Workspace(workspace)
    ids = ws.image_ids()
    # two hand-made mask stages: a perfect copy of the GT and an all-background guess
    ws.begin_stage("pseudo/perfect", "p", {})
    ws.begin_stage("pseudo/background", "b", {})
    for image_id in ids:
        gt = ws.read_array("gt", image_id)
        ws.write_array("pseudo/perfect", image_id, np.where(gt == 255, 0, gt).astype(np.uint8))
        ws.mark_done("pseudo/perfect", image_id, "p")
        ws.write_array("pseudo/background", image_id, np.zeros_like(gt))
        ws.mark_done("pseudo/background", image_id, "b")
    results = evaluate_flow(str(workspace), ["pseudo/perfect", "pseudo/background"], run_name="t", batch_size=5)
    assert results["pseudo/perfect"]["miou"] == 1.0
    background = results["pseudo/background"]
    gt_pixels = np.zeros(len(ws.classes))
    for image_id in ids:
        gt = ws.read_array("gt", image_id)
        gt_pixels += np.bincount(gt[gt != 255], minlength=len(ws.classes))
    assert background["iou"][0] == gt_pixels[0] / gt_pixels.sum()  # background IoU = its share of pixels
    assert all(v == 0 for v in background["iou"][1:] if v is not None)
    saved = json.loads((workspace / "reports/evaluation-t.json").read_text())
    assert saved["results"]["pseudo/perfect"]["miou"] == 1.0
    runs = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace)).search_runs(["0", "1"])
    metrics = [r.data.metrics for r in runs if r.info.run_name == "t"][0]
    assert metrics["pseudo.perfect.mIoU"] == 1.0


def test_methods_scored_on_different_images_say_so(synthetic_root, tmp_path, capsys):
    workspace = tmp_path / "ws"
    ingest_flow(root=str(synthetic_root), workspace=str(workspace), execution=Execution(progress=False))
    ws = Workspace(workspace)
    ids = ws.image_ids()
    for stage, done in (("pseudo/all", ids), ("pseudo/one-missing", ids[1:])):
        ws.begin_stage(stage, "k", {})
        for image_id in done:
            ws.write_array(stage, image_id, np.zeros_like(ws.read_array("gt", image_id)))
            ws.mark_done(stage, image_id, "k")
    results = evaluate_flow(str(workspace), ["pseudo/all", "pseudo/one-missing"], run_name="t", log_to_mlflow=False)
    assert results["pseudo/all"]["images"] == len(ids) and results["pseudo/one-missing"]["images"] == len(ids) - 1
    err = capsys.readouterr().err
    assert "scored on different images" in err and f"pseudo/one-missing {len(ids) - 1}" in err
