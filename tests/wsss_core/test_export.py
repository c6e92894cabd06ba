import numpy as np
import pytest
from PIL import Image

from wsss_core.errors import UsageError, WorkspaceError
from wsss_core.export import export_masks, exportable_ids, is_mask_stage
from wsss_core.store import INGEST_STAGE, Workspace

DATASET = {"name": "voc:toy", "format": "voc", "root": "/data/toy", "classes": ["background", "cat"], "split": "train"}


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    """Two ingested images with GT, and a stage of each kind: label maps, graphs, CAMs, seeds, a pseudo mask."""
    ws = Workspace(tmp_path / "ws")
    ws.bind_dataset(DATASET)
    ws.begin_stage(INGEST_STAGE, "k0", {})
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 1
    for image_id in ("a", "b"):
        ws.write_array("images", image_id, np.zeros((4, 6, 3), np.uint8))
        ws.write_array("gt", image_id, mask)
        ws.mark_done(INGEST_STAGE, image_id, "k0")
    arrays = {
        "superpixels": np.arange(24, dtype=np.int32).reshape(4, 6) * 20,  # label ids up to 460
        "graphs": np.zeros((3, 2), np.int64),
        "cams": np.zeros((2, 4, 6), np.float32),
        "seeds/scribbles": np.zeros(5, np.int64),
        "pseudo/gcn-scribbles": mask,
    }
    for stage, array in arrays.items():
        ws.begin_stage(stage, "k1", {})
        ws.write_array(stage, "a", array)
        ws.mark_done(stage, "a", "k1")
    return ws


@pytest.mark.parametrize("stage", ["superpixels", "graphs", "cams", "seeds/scribbles", INGEST_STAGE, "images"])
def test_stages_that_hold_no_class_masks_are_refused_with_the_exportable_ones(workspace, tmp_path, stage):
    assert not is_mask_stage(stage)
    with pytest.raises(WorkspaceError, match=rf"no mask stage '{stage}' \(exportable: gt, scribbles, manual, pseudo/gcn-scribbles\)"):
        export_masks(workspace, stage, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mask_stages_export(workspace, tmp_path):
    assert is_mask_stage("pseudo/gcn-scribbles-crf") and is_mask_stage("pseudo/rw") and is_mask_stage("gt")
    assert exportable_ids(workspace, "gt") == ["a", "b"]
    written = export_masks(workspace, "pseudo/gcn-scribbles", tmp_path / "out")
    assert [p.name for p in written] == ["a.png"]
    assert np.array_equal(np.asarray(Image.open(written[0])), workspace.read_array("gt", "a"))
    with pytest.raises(WorkspaceError, match="no mask stage 'pseudo/rw'"):
        export_masks(workspace, "pseudo/rw", tmp_path / "out")  # a mask method this workspace has not run


def test_an_out_that_is_a_file_is_refused(workspace, tmp_path):
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(UsageError, match=r"taken: exists and is not a folder"):
        export_masks(workspace, "gt", tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "mine"
