"""A mixed dataset (images with scribbles, boxes, both, or tags only) through `wsss run`: each path
over the images that carry its label, and pseudo/mixed for every image."""

import numpy as np
import pytest
import torch

from typer.testing import CliRunner

from cli import app
from flows.common import Execution, flow_result
from flows.run import run_flow
from tests.flows.test_affinitynet import tiny_config
from wsss_core.config import config_to_dict
from wsss_core.data.label_mix import parse_label_mix
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset
from wsss_core.store import Workspace

MIX = "scribbles=0.25,boxes=0.25,boxes+scribbles=0.25,tags=0.25"


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    return generate_dataset(root, SyntheticConfig(n_images=8, width=96, height=72, seed=3), parse_label_mix(MIX))


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_mixed_dataset_runs_every_path_on_its_images_and_masks_every_image(mixed_root, tmp_path):
    workspace = str(tmp_path / "ws")
    settings = {
        "ingest": {"root": str(mixed_root), "splits": ["train", "val"]},
        "paths": ["graphnet-scribbles", "graphnet-boxes", "graphnet-mixed"], "mlflow": False, "device": "cpu",
        "affinitynet": {"preset": "small", "overrides": config_to_dict(tiny_config(cam_epochs=1))},
        "graphnet": {"preset": "offline", "overrides": {"gcn": {"pretrain_epochs": 10}}},
        "segmentation": {"rounds": 0},
        "execution": {"progress": False, "batch_size": 4},
    }
    whole = flow_result(run_flow, workspace=workspace, settings=settings)
    assert whole.ok and not whole.skipped  # no image fails for the labels it lacks

    ws = Workspace(workspace)
    ids = ws.image_ids()
    groups = {i: ws.label_group(i) for i in ids}
    assert sorted(groups.values()) == sorted(["scribbles", "boxes", "boxes+scribbles", "tags"] * 2)
    scribbled = {i for i, g in groups.items() if "scribbles" in g}
    boxed = {i for i, g in groups.items() if "boxes" in g}
    assert ws.done_ids("pseudo/gcn-scribbles") == scribbled and ws.done_ids("pseudo/nearest-scribbles") == scribbled
    assert ws.done_ids("pseudo/gcn-boxes") == boxed
    assert ws.done_ids("pseudo/mixed") == set(ids) and whole.paths["graphnet-mixed"].final_masks == "pseudo/mixed"
    for stage in ("seeds/scribbles", "pseudo/gcn-scribbles", "gcn-weights/gcn-boxes", "pseudo/mixed"):
        status = ws.status(stage)  # an image without the label is neither pending nor failed there
        assert status.pending == 0 and status.failed == 0, stage
    assert ws.status("pseudo/gcn-boxes").done == len(boxed)

    # the shared GCN learned from every image's seeds: scribble and box nodes together where both are drawn
    for image_id, group in groups.items():
        seeds = ws.read_array("seeds/mixed", image_id, "labels")
        if group == "boxes+scribbles":
            scribble_seeds = ws.read_array("seeds/scribbles", image_id, "labels")
            box_seeds = ws.read_array("seeds/boxes", image_id, "labels")
            assert (seeds[scribble_seeds >= 0] == scribble_seeds[scribble_seeds >= 0]).all()
            assert ((seeds >= 0) & (scribble_seeds < 0) & (box_seeds >= 0)).any()
        if group == "tags":  # the CAM seeds the GCN fitted on the drawn images agrees with, no others
            agreed = ws.read_array("seeds/mixed-agreed", image_id, "labels")
            assert (agreed >= 0).any() and (agreed[agreed >= 0] == seeds[agreed >= 0]).all()
        else:
            assert np.array_equal(ws.read_array("seeds/mixed-agreed", image_id, "labels"), seeds)
    for stage in ("gcn-weights/mixed-drawn", "gcn-weights/gcn-mixed"):  # both serve every image
        assert ws.status(stage).done == len(ids)
    # pseudo/mixed: each image from the GCN fitted on labels at least as strong as its own
    expected = {"scribbles": "nodes/mixed-scribbled", "boxes+scribbles": "nodes/mixed-scribbled",
                "boxes": "nodes/mixed-drawn", "tags": "shared"}
    for image_id, group in groups.items():
        assert ws.array_attributes("pseudo/mixed", image_id)["source"] == expected[group], (image_id, group)
        if group == "tags":
            assert np.array_equal(ws.read_array("pseudo/mixed", image_id), ws.read_array("pseudo/gcn-mixed", image_id))
    assert ws.status("nodes/mixed-scribbled").done == len(scribbled) and ws.status("pseudo/mixed").pending == 0
    status = CliRunner().invoke(app, ["status", "--workspace", workspace], catch_exceptions=False)
    assert status.exit_code == 0 and "label groups: 2 boxes, 2 boxes+scribbles, 2 scribbles, 2 tags" in status.output

    # the evaluation breaks each mask set down by the labels its images had
    rows = whole.evaluation["pseudo/mixed"]["splits"]
    assert {"labels:scribbles", "labels:boxes", "labels:boxes+scribbles", "labels:tags"} <= set(rows)
    assert rows["labels:tags"]["images"] == 2 and whole.evaluation["pseudo/mixed"]["images"] == len(ids)
    assert whole.evaluation["pseudo/gcn-scribbles"]["splits"]["labels:tags"]["images"] == 0


def test_an_image_that_gains_a_scribble_ends_as_a_clean_run_of_the_changed_dataset_would(mixed_root, tmp_path):
    import json
    import shutil

    from wsss_core.data.image_io import save_palette_png
    from wsss_core.data.synthetic import generate_sample

    root = shutil.copytree(mixed_root, tmp_path / "data")
    settings = {
        "ingest": {"root": str(root), "splits": ["train", "val"]}, "paths": ["graphnet-mixed"], "mlflow": False,
        "device": "cpu", "evaluate": False,
        "affinitynet": {"preset": "small", "overrides": config_to_dict(tiny_config(cam_epochs=1))},
        "graphnet": {"preset": "offline", "overrides": {"gcn": {"pretrain_epochs": 10}}},
        "segmentation": {"rounds": 0}, "execution": {"progress": False, "batch_size": 4},
    }
    assert flow_result(run_flow, workspace=str(tmp_path / "ws"), settings=settings).ok
    groups = json.loads((root / "synthetic.json").read_text())["label_groups"]
    tagged = sorted(i for i, g in groups.items() if g == "tags")[0]
    config = SyntheticConfig(n_images=8, width=96, height=72, seed=3)
    save_palette_png(root / "scribbles" / f"{tagged}.png", generate_sample(int(tagged.split("_")[1]), config).scribble)

    again = flow_result(run_flow, workspace=str(tmp_path / "ws"), settings=settings)
    clean = flow_result(run_flow, workspace=str(tmp_path / "clean"), settings=settings)
    assert again.ok and clean.ok
    ws, fresh = Workspace(tmp_path / "ws"), Workspace(tmp_path / "clean")
    assert ws.label_group(tagged) == "scribbles"
    assert ws.array_attributes("pseudo/mixed", tagged)["source"] == "nodes/mixed-scribbled"
    for image_id in fresh.image_ids():
        assert np.array_equal(ws.read_array("pseudo/mixed", image_id), fresh.read_array("pseudo/mixed", image_id)), image_id
