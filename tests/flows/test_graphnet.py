import numpy as np
import pytest

from flows.common import Execution, flow_result
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.requests import GraphNetRequest
from wsss_core.store import Workspace

QUIET = Execution(progress=False)
SMALL = dict(preset="offline", overrides={"gcn": {"pretrain_epochs": 40}})


@pytest.fixture()
def workspace(synthetic_root, tmp_path):
    path = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=path, execution=QUIET)
    return path


def stage_lines(run):
    return {summary.stage: summary for summary in run.summaries}


def test_scribbles_end_to_end_masks_evaluation_and_skip_on_repeat(workspace):
    ws = Workspace(workspace)
    ids = ws.image_ids()
    run = graphnet_flow(workspace=workspace, request=GraphNetRequest(**SMALL, crf=True, log_to_mlflow=False), execution=QUIET)
    assert run.ok
    assert run.mask_stages == ["pseudo/gcn-scribbles", "pseudo/gcn-scribbles-crf", "pseudo/nearest-scribbles"]
    for stage in run.mask_stages:
        assert ws.done_ids(stage) == set(ids)
    mask = ws.read_array("pseudo/gcn-scribbles", ids[0])
    assert mask.shape == ws.array_shape("images", ids[0])[:2] and mask.dtype == np.uint8
    assert mask.max() < len(ws.classes)
    scores = {stage: result["miou"] for stage, result in run.evaluation.items()}
    assert set(scores) == set(run.mask_stages)
    # the learned propagation must beat filling from the nearest scribble pixel
    assert scores["pseudo/gcn-scribbles"] > scores["pseudo/nearest-scribbles"] + 0.2
    assert scores["pseudo/gcn-scribbles"] > 0.6
    assert (ws.path / "models" / "gcn").is_dir()

    again = graphnet_flow(workspace=workspace, request=GraphNetRequest(**SMALL, crf=True, evaluate=False), execution=QUIET)
    assert all(summary.done == 0 for summary in again.summaries)


def test_changing_the_gcn_recomputes_gcn_and_masks_only(workspace):
    graphnet_flow(workspace=workspace, request=GraphNetRequest(**SMALL, evaluate=False), execution=QUIET)
    changed = dict(preset="offline", overrides={"gcn": {"pretrain_epochs": 40, "hidden": 16}})
    run = stage_lines(graphnet_flow(workspace=workspace, request=GraphNetRequest(**changed, evaluate=False), execution=QUIET))
    assert run["graphs"].done == 0 and run["seeds/scribbles"].done == 0
    assert run["nodes/gcn-scribbles"].done == run["nodes/gcn-scribbles"].total > 0
    assert run["pseudo/gcn-scribbles"].done == run["pseudo/gcn-scribbles"].total
    assert Workspace(workspace).stage_meta("nodes/gcn-scribbles")["config"]["config"]["hidden"] == 16


def test_boxes_give_only_box_classes_and_label_propagation_runs_on_the_same_graph(workspace):
    ws = Workspace(workspace)
    boxes = graphnet_flow(workspace=workspace, request=GraphNetRequest(supervision="boxes", **SMALL, log_to_mlflow=False), execution=QUIET)
    assert boxes.ok
    assert set(boxes.evaluation) == {"pseudo/box-rectangles", "pseudo/gcn-boxes"}
    assert boxes.evaluation["pseudo/gcn-boxes"]["miou"] > 0.5
    for image_id in ws.image_ids():
        mask = ws.read_array("pseudo/gcn-boxes", image_id)
        allowed = {0, *ws.read_array("boxes", image_id)[:, 0].astype(int).tolist()}  # rows: class, x0, y0, x1, y1
        assert set(np.unique(mask).tolist()) <= allowed, image_id

    lp = graphnet_flow(workspace=workspace, request=GraphNetRequest(propagation="label-propagation", **SMALL, log_to_mlflow=False), execution=QUIET)
    assert lp.ok and "pseudo/labelprop-scribbles" in lp.evaluation
    assert "pseudo/gcn-boxes" not in lp.evaluation  # only this supervision's masks are scored


def test_an_image_without_scribbles_fails_alone(workspace):
    ws = Workspace(workspace)
    broken = ws.image_ids()[0]
    ws.write_array("scribbles", broken, np.full(ws.array_shape("images", broken)[:2], IGNORE_INDEX, np.uint8))
    run = stage_lines(flow_result(graphnet_flow, workspace=workspace, request=GraphNetRequest(**SMALL, evaluate=False), execution=QUIET))
    assert broken in run["seeds/scribbles"].failed
    assert "no node is seeded" in run["seeds/scribbles"].failed[broken]
    assert run["pseudo/gcn-scribbles"].done == len(ws.image_ids()) - 1
    assert broken in {record.image_id for record in ws.failures("seeds/scribbles")}


def test_paper_preset_runs_the_cnn_feature_stage_offline(workspace):
    run = graphnet_flow(workspace=workspace, request=GraphNetRequest(preset="paper", backbone="resnet18", weights="DEFAULT", overrides={"gcn.epochs": 20}, until="propagation"), execution=QUIET)
    assert run.ok
    ws = Workspace(workspace)
    image_id = ws.image_ids()[0]
    height, width = ws.array_shape("images", image_id)[:2]
    features = ws.read_array("features", image_id)
    assert features.dtype == np.float16 and features.shape == (512, -(-height // 8), -(-width // 8))
    assert ws.stage_meta("features")["config"]["source"]["fallback"] is True
    assert run.notes["weights"]["features"]["fallback"] is True
    probabilities = ws.read_array("nodes/gcn-scribbles", image_id)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
