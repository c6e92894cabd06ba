import json

import mlflow
import numpy as np

from flows.evaluate import evaluate_flow
from flows.common import Execution
from flows.ingest import ingest_flow
from wsss_core.store import Workspace
from wsss_core.tracking import tracking_uri


def test_scores_a_stage_against_gt_per_split_and_logs_to_mlflow(synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    ingest_flow(root=str(synthetic_root), workspace=str(workspace), split=["train", "val"], execution=Execution(progress=False))
    ws = Workspace(workspace)
    ids = ws.image_ids()
    # hand-made mask stages: a perfect copy of the GT, an all-background guess, and a "round" of it
    stages = ["pseudo/perfect", "pseudo/background", "pseudo/nearest-scribbles", "pseudo/nearest-scribbles/round-1"]
    for stage in stages:
        ws.begin_stage(stage, "k", {})
    ws.note_stage("pseudo/nearest-scribbles", settings={"path": "graphnet-scribbles", "preset": "offline"})
    for image_id in ids:
        gt = ws.read_array("gt", image_id)
        for stage, mask in zip(stages, [np.where(gt == 255, 0, gt), np.zeros_like(gt), np.zeros_like(gt), np.where(gt == 255, 0, gt)]):
            ws.write_array(stage, image_id, mask.astype(np.uint8))
            ws.mark_done(stage, image_id, "k")
    results = evaluate_flow(str(workspace), stages, run_name="t", batch_size=5)
    assert results["pseudo/perfect"]["miou"] == 1.0
    background = results["pseudo/background"]
    gt_pixels = np.zeros(len(ws.classes))
    for image_id in ids:
        gt = ws.read_array("gt", image_id)
        gt_pixels += np.bincount(gt[gt != 255], minlength=len(ws.classes))
    assert background["iou"][0] == gt_pixels[0] / gt_pixels.sum()  # background IoU = its share of pixels
    assert all(v == 0 for v in background["iou"][1:] if v is not None)
    # per split: each split's own images
    splits = results["pseudo/perfect"]["splits"]
    assert set(splits) == {"train", "val"}
    assert splits["train"]["images"] == len(ws.split_ids("train")) and splits["val"]["images"] == len(ws.split_ids("val"))
    assert splits["val"]["miou"] == 1.0
    saved = json.loads((workspace / "reports/evaluation-t.json").read_text())
    assert saved["results"]["pseudo/perfect"]["miou"] == 1.0 and saved["unit"] == "fraction"
    assert saved["results"]["pseudo/background"]["splits"]["val"]["images"] == len(ws.split_ids("val"))
    # the table: one row per (mask set, split), rounds in order, in percent
    table = [line.split() for line in capsys.readouterr().err.splitlines() if line.startswith(("mask set", "pseudo/"))]
    assert table[0][:4] == ["mask", "set", "round", "split"]
    assert [row[:3] for row in table[1:]] == [
        ["pseudo/nearest-scribbles", "0", "train"], ["pseudo/nearest-scribbles", "0", "val"],
        ["pseudo/nearest-scribbles/round-1", "1", "train"], ["pseudo/nearest-scribbles/round-1", "1", "val"],
        ["pseudo/background", "-", "train"], ["pseudo/background", "-", "val"],
        ["pseudo/perfect", "-", "train"], ["pseudo/perfect", "-", "val"],
    ]
    assert table[-1][-1] == "100.0"

    # MLflow: one run for the flow run, one nested run per (mask set, split)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace))
    experiment = client.get_experiment_by_name("wsss")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("kind") == "flow"]
    assert len(parent) == 1 and parent[0].info.run_name.startswith("evaluate ")
    assert parent[0].data.tags["prefect.flow_run_id"] and parent[0].data.tags["workspace"] == str(workspace.resolve())
    nested = {r.info.run_name: r for r in runs if r.data.tags.get("kind") == "evaluation"}
    assert len(nested) == 2 * len(stages)
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in nested.values())
    perfect = nested["pseudo/perfect val"]
    assert perfect.data.metrics["miou"] == 100.0 and perfect.data.tags["metric_unit"] == "percent"
    present = {f"iou/{name}" for name, v in zip(ws.classes, results["pseudo/perfect"]["splits"]["val"]["iou"]) if v is not None}
    assert {m for m in perfect.data.metrics if m.startswith("iou/")} == present and len(present) > 1
    round_one = nested["pseudo/nearest-scribbles/round-1 train"].data.params
    assert round_one["method"] == "nearest-scribbles" and round_one["round"] == "1" and round_one["split"] == "train"
    assert round_one["supervision"] == "scribbles" and round_one["n_images"] == str(len(ws.split_ids("train")))
    round_zero = nested["pseudo/nearest-scribbles val"].data.params
    assert round_zero["round"] == "0" and round_zero["preset"] == "offline"  # the settings recorded with the masks
    found = client.search_runs([experiment.experiment_id], "params.method = 'nearest-scribbles' and params.split = 'val'",
                               order_by=["metrics.miou DESC"])
    assert [r.info.run_name for r in found] == ["pseudo/nearest-scribbles/round-1 val", "pseudo/nearest-scribbles val"]
    artifacts = {a.path for a in client.list_artifacts(found[0].info.run_id)}
    assert {"confusion.png", "overlays.png", "report"} <= artifacts
    assert [a.path for a in client.list_artifacts(found[0].info.run_id, "report")] == ["report/evaluation-t.json"]


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


def test_unchanged_masks_are_read_back_and_a_recomputed_mask_is_scored_again(synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    ingest_flow(root=str(synthetic_root), workspace=str(workspace), split=["train", "val"], execution=Execution(progress=False))
    ws = Workspace(workspace)
    ids = ws.image_ids()
    stages = ["pseudo/perfect", "pseudo/background"]
    for stage in stages:
        ws.begin_stage(stage, "k", {})
    for image_id in ids:
        gt = ws.read_array("gt", image_id)
        for stage, mask in zip(stages, [np.where(gt == 255, 0, gt), np.zeros_like(gt)]):
            ws.write_array(stage, image_id, mask.astype(np.uint8))
            ws.mark_done(stage, image_id, "k")
    first = evaluate_flow(str(workspace), stages, run_name="a")
    capsys.readouterr()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace))
    experiment = client.get_experiment_by_name("wsss").experiment_id
    logged = len(client.search_runs([experiment]))

    again = evaluate_flow(str(workspace), stages, run_name="b")  # nothing changed: read back, nothing logged again
    assert "2 of 2 mask sets unchanged" in capsys.readouterr().err
    assert again == first and len(client.search_runs([experiment])) == logged
    assert json.loads((workspace / "reports/evaluation-b.json").read_text())["results"] == first

    # one image's mask recomputed (the pipeline writes its marker again after the array): scored again
    gt = ws.read_array("gt", ids[0])
    ws.write_array("pseudo/perfect", ids[0], np.zeros_like(gt))
    ws.mark_done("pseudo/perfect", ids[0], "k")
    changed = evaluate_flow(str(workspace), stages, run_name="c")
    assert "1 of 2 mask sets unchanged" in capsys.readouterr().err
    assert changed["pseudo/perfect"]["miou"] < 1.0 and changed["pseudo/background"] == first["pseudo/background"]
    assert len(client.search_runs([experiment])) == logged + 1 + 2  # a flow run and the changed set's two splits
    # another image selection is another evaluation: nothing read back
    evaluate_flow(str(workspace), stages, run_name="d", splits=["val"], log_to_mlflow=False)
    assert "unchanged" not in capsys.readouterr().err
