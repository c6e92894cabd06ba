"""GraphNet from image tags: the AffinityNet path's CAM rows seed the superpixel graph."""

import numpy as np
import pytest
import torch

from flows.affinitynet import affinitynet_flow
from flows.common import Execution, flow_result
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from tests.flows.test_affinitynet import tiny_config
from wsss_core.config import config_to_dict
from wsss_core.requests import AffinityNetRequest, CamSettings, GraphNetRequest
from wsss_core.store import Workspace

QUIET = Execution(batch_size=4, progress=False)
GCN = dict(preset="offline", overrides={"gcn": {"pretrain_epochs": 40}})
CAM_ROWS = ["train-cam", "cams", "pseudo/cam", "affinity-labels"]


@pytest.fixture
def workspace(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "ws"
    ingest_flow(root=str(synthetic_root), workspace=str(path), execution=Execution(progress=False))
    return str(path)


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def stage_lines(run):
    return {summary.stage: summary for summary in run.summaries}


def test_gcn_tags_runs_the_cam_rows_beats_its_cam_and_reuses_them_after_affinitynet(workspace):
    cams = config_to_dict(tiny_config(cam_epochs=3))
    run = flow_result(graphnet_flow, workspace=workspace, request=GraphNetRequest(supervision="tags", **GCN, device="cpu", log_to_mlflow=False, cam=CamSettings(overrides=cams)), execution=QUIET)
    assert run.ok
    lines = stage_lines(run)
    assert list(lines)[:4] == CAM_ROWS and all(lines[s].done > 0 for s in CAM_ROWS)
    assert run.mask_stages == ["pseudo/cam", "pseudo/gcn-tags"] and run.final_masks == "pseudo/gcn-tags"

    ws = Workspace(workspace)
    seeded = []
    for image_id in ws.image_ids():  # no node takes a class the image is not tagged with
        tags = ws.read_array("tags", image_id).tolist()
        assert set(np.unique(ws.read_array("pseudo/gcn-tags", image_id))) <= {0, *tags}
        seeds = ws.read_array("seeds/tags", image_id, "labels")
        assert (seeds >= 0).any() and set(np.unique(seeds)) <= {-1, 0, *tags}
        seeded.append(seeds >= 0)
    assert 0 < np.concatenate(seeded).mean() < 1  # confident nodes seed, the others stay open

    scores = {stage: row["miou"] for stage, row in run.evaluation.items()}
    assert scores["pseudo/gcn-tags"] > scores["pseudo/cam"], scores

    # the AffinityNet path with the same CAM settings reuses the CAM rows the graph path made,
    # and graphnet again after it recomputes nothing
    psa = flow_result(affinitynet_flow, workspace=workspace, request=AffinityNetRequest(preset="small", overrides=cams, crf=False, device="cpu", train_threads=1, log_to_mlflow=False), execution=QUIET)
    assert psa.ok and not any(stage_lines(psa)[s].done for s in CAM_ROWS)
    again = flow_result(graphnet_flow, workspace=workspace, request=GraphNetRequest(supervision="tags", **GCN, device="cpu", log_to_mlflow=False, cam=CamSettings(overrides=cams)), execution=QUIET)
    assert not any(line.done for line in again.summaries)
    assert {"pseudo/cam", "pseudo/rw", "pseudo/gcn-tags"} <= set(again.evaluation)  # one table for tags
