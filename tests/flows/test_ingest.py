import numpy as np
import pytest

from flows.ingest import ingest_flow
from wsss_core.data.readers import open_reader
from wsss_core.errors import DatasetError, WorkspaceError
from wsss_core.store import INGEST_STAGE, Workspace


def test_ingest_writes_every_array_and_is_idempotent(synthetic_root, tmp_path):
    workspace = tmp_path / "ws"
    summary = ingest_flow(root=str(synthetic_root), workspace=str(workspace), batch_size=4, progress=False)
    reader = open_reader(synthetic_root, format="voc", split="train")
    ids = reader.image_ids()
    assert summary.ok and summary.done == len(ids) and summary.skipped == 0
    ws = Workspace(workspace)
    assert ws.image_ids() == sorted(ids)
    assert ws.classes == reader.classes
    sample = reader.load(ids[0])
    assert np.array_equal(ws.read_array("images", ids[0]), sample.image)
    assert np.array_equal(ws.read_array("gt", ids[0]), sample.gt)
    assert np.array_equal(ws.read_array("scribbles", ids[0]), sample.scribble)
    assert np.array_equal(ws.read_array("boxes", ids[0]), sample.boxes_array())
    assert ws.read_array("tags", ids[0]).tolist() == sample.tags

    again = ingest_flow(root=str(synthetic_root), workspace=str(workspace), batch_size=4, progress=False)
    assert again.done == 0 and again.skipped == len(ids)

    # a second split of the same dataset joins the workspace
    val = ingest_flow(root=str(synthetic_root), workspace=str(workspace), split="val", progress=False)
    assert val.ok and len(ws.image_ids()) == len(ids) + val.done
    assert ws.dataset["splits"] == ["train", "val"]


def test_bad_images_become_failure_records_and_the_rest_goes_on(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(synthetic_root, root)
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    jpeg = root / "JPEGImages" / f"{ids[0]}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # truncated
    with open(root / "ImageSets/Segmentation/train.txt", "a") as handle:
        handle.write("../../etc/passwd\nmissing_image\n")
    summary = ingest_flow(root=str(root), workspace=str(tmp_path / "ws"), batch_size=3, progress=False)
    assert set(summary.failed) == {ids[0], "../../etc/passwd", "missing_image"}
    assert summary.done == len(ids) - 1
    ws = Workspace(tmp_path / "ws")
    records = {r.image_id: r for r in ws.failures(INGEST_STAGE)}
    assert f"{ids[0]}.jpg" in records[ids[0]].message
    assert "missing_image" in records["missing_image"].message


def test_empty_dataset_and_foreign_workspace_are_refused(synthetic_root, tmp_path):
    import shutil

    empty = tmp_path / "empty"
    shutil.copytree(synthetic_root, empty)
    (empty / "ImageSets/Segmentation/train.txt").write_text("")
    with pytest.raises(DatasetError, match="empty"):
        ingest_flow(root=str(empty), workspace=str(tmp_path / "ws1"), progress=False)

    ingest_flow(root=str(synthetic_root), workspace=str(tmp_path / "ws2"), progress=False)
    other = tmp_path / "other"
    shutil.copytree(synthetic_root, other)
    (other / "classes.txt").write_text("background\nthing\n")
    with pytest.raises(WorkspaceError, match="made from dataset"):
        ingest_flow(root=str(other), workspace=str(tmp_path / "ws2"), progress=False)
