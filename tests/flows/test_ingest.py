import numpy as np
import pytest

from flows.common import Execution, ImagesFailedError, flow_result
from flows.ingest import ingest_flow
from wsss_core.data.readers import open_reader
from wsss_core.errors import DatasetError, WorkspaceError
from wsss_core.store import INGEST_STAGE, Workspace


def test_ingest_writes_every_array_and_is_idempotent(synthetic_root, tmp_path):
    workspace = tmp_path / "ws"
    summary = ingest_flow(root=str(synthetic_root), workspace=str(workspace), execution=Execution(batch_size=4, progress=False))
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

    assert ws.splits() == ["train"] and ws.split_ids("train") == sorted(ids)
    record = (workspace / "splits/train.json").read_text()

    again = ingest_flow(root=str(synthetic_root), workspace=str(workspace), execution=Execution(batch_size=4, progress=False))
    assert again.done == 0 and again.skipped == len(ids)
    assert (workspace / "splits/train.json").read_text() == record

    # a second split of the same dataset joins the workspace; the first keeps its images
    val = ingest_flow(root=str(synthetic_root), workspace=str(workspace), split="val", execution=Execution(progress=False))
    val_ids = open_reader(synthetic_root, format="voc", split="val").image_ids()
    assert val.ok and len(ws.image_ids()) == len(ids) + val.done
    assert ws.dataset["splits"] == ws.splits() == ["train", "val"]
    assert ws.select_ids(["train"]) == sorted(ids)
    assert ws.select_ids(["val"]) == sorted(val_ids)
    assert ws.select_ids(["train", "val"]) == ws.select_ids(None) == ws.image_ids()


def test_several_splits_in_one_run_ingest_each_image_once(synthetic_root, tmp_path):
    lists = {s: open_reader(synthetic_root, format="voc", split=s).image_ids() for s in ("train", "val", "trainval")}
    summary = ingest_flow(
        root=str(synthetic_root), workspace=str(tmp_path / "ws"), split=["train", "val", "trainval"], execution=Execution(progress=False)
    )
    assert summary.ok and summary.total == summary.done == len(lists["trainval"])  # train + val = trainval
    ws = Workspace(tmp_path / "ws")
    assert ws.splits() == ["train", "trainval", "val"]
    assert {s: ws.split_ids(s) for s in lists} == {s: sorted(ids) for s, ids in lists.items()}
    assert ws.image_splits(lists["val"][0]) == ["trainval", "val"]
    assert ws.select_ids(["val"]) == sorted(lists["val"])
    with pytest.raises(WorkspaceError, match=r"no split 'test' in this workspace \(splits: train, trainval, val\)"):
        ws.select_ids(["test"])


def test_bad_split_names_are_refused_before_anything_is_written(synthetic_root, tmp_path):
    workspace = tmp_path / "ws"
    with pytest.raises(WorkspaceError, match="invalid split name '../val'"):
        ingest_flow(root=str(synthetic_root), workspace=str(workspace), split=["train", "../val"], execution=Execution(progress=False))
    with pytest.raises(DatasetError, match="COCO instances file is one split"):
        ingest_flow(root=str(tmp_path / "x.json"), workspace=str(workspace), format="coco", split=["a", "b"])
    assert not workspace.exists()


def test_old_workspaces_get_their_splits_by_re_ingesting(synthetic_root, tmp_path):
    import shutil

    train = sorted(open_reader(synthetic_root, format="voc", split="train").image_ids())
    val = sorted(open_reader(synthetic_root, format="voc", split="val").image_ids())

    # one split: every ingested image is in it, and adding a second split keeps that
    one = tmp_path / "one"
    ingest_flow(root=str(synthetic_root), workspace=str(one), execution=Execution(progress=False))
    shutil.rmtree(one / "splits")  # as made before per-image splits
    ws = Workspace(one)
    assert ws.select_ids(["train"]) == train
    ingest_flow(root=str(synthetic_root), workspace=str(one), split="val", execution=Execution(progress=False))
    assert ws.select_ids(["train"]) == train and ws.select_ids(["val"]) == val

    # two splits: unknown until each is re-ingested; the images themselves are skipped
    two = tmp_path / "two"
    ingest_flow(root=str(synthetic_root), workspace=str(two), split=["train", "val"], execution=Execution(progress=False))
    shutil.rmtree(two / "splits")
    ws = Workspace(two)
    with pytest.raises(WorkspaceError, match="re-run `wsss ingest --split train` and `wsss ingest --split val`"):
        ws.select_ids(["train"])
    again = ingest_flow(root=str(synthetic_root), workspace=str(two), split="train", execution=Execution(progress=False))
    assert again.done == 0 and again.skipped == len(train)
    assert ws.select_ids(["train"]) == train
    with pytest.raises(WorkspaceError, match="re-run `wsss ingest --split val` on this workspace"):
        ws.select_ids(["train", "val"])


def test_bad_images_become_failure_records_and_the_rest_goes_on(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(synthetic_root, root)
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    jpeg = root / "JPEGImages" / f"{ids[0]}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # truncated
    with open(root / "ImageSets/Segmentation/train.txt", "a") as handle:
        handle.write("../../etc/passwd\nmissing_image\n")
    state = ingest_flow(
        root=str(root), workspace=str(tmp_path / "ws"), execution=Execution(batch_size=3, progress=False), return_state=True
    )
    # the flow run is Failed (the UI, automations and `prefect flow-run retry` see it), with the count
    assert state.is_failed()
    assert state.message.startswith("3 image(s) failed (ingest 3); see `wsss status --workspace")
    summary = state.result(raise_on_failure=False).result  # what the flow did is still there
    assert set(summary.failed) == {ids[0], "../../etc/passwd", "missing_image"}
    assert summary.done == len(ids) - 1
    ws = Workspace(tmp_path / "ws")
    records = {r.image_id: r for r in ws.failures(INGEST_STAGE)}
    assert f"{ids[0]}.jpg" in records[ids[0]].message
    assert "missing_image" in records["missing_image"].message
    # a failed image is no member of its split until a later run ingests it
    assert ws.split_ids("train") == sorted(ids[1:])
    shutil.copy(synthetic_root / "JPEGImages" / f"{ids[0]}.jpg", jpeg)
    with pytest.raises(ImagesFailedError, match="2 image") as failed:  # called as a function: raises
        ingest_flow(root=str(root), workspace=str(tmp_path / "ws"), execution=Execution(batch_size=3, progress=False))
    again = failed.value.result
    assert again.done == 1 and set(again.failed) == {"../../etc/passwd", "missing_image"}
    assert ws.split_ids("train") == sorted(ids)


def test_an_id_with_a_space_and_an_outside_link_fail_under_their_own_names(synthetic_root, tmp_path):
    import os
    import shutil

    root = tmp_path / "odd"
    shutil.copytree(synthetic_root, root)
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    outside = tmp_path / "outside.jpg"
    shutil.move(root / "JPEGImages" / f"{ids[0]}.jpg", outside)
    os.symlink(outside, root / "JPEGImages" / f"{ids[0]}.jpg")
    with open(root / "ImageSets/Segmentation/train.txt", "a") as handle:
        handle.write(f"{ids[1]} copy\n")
    summary = flow_result(ingest_flow, root=str(root), workspace=str(tmp_path / "ws"), execution=Execution(progress=False))
    assert set(summary.failed) == {ids[0], f"{ids[1]} copy"}
    assert f"invalid image id '{ids[1]} copy'" in summary.failed[f"{ids[1]} copy"]
    assert "symlink points outside the dataset root" in summary.failed[ids[0]]
    assert f"{ids[0]}.jpg" in summary.failed[ids[0]]


def test_a_scribble_that_is_a_directory_fails_that_image_at_ingest_not_later_at_seeds(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "folder"
    shutil.copytree(synthetic_root, root)
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    scribble = root / "scribbles" / f"{ids[0]}.png"
    scribble.unlink()
    scribble.mkdir()
    summary = flow_result(ingest_flow, root=str(root), workspace=str(tmp_path / "ws"), execution=Execution(progress=False))
    assert list(summary.failed) == [ids[0]] and summary.done == len(ids) - 1
    ws = Workspace(tmp_path / "ws")
    [record] = ws.failures(INGEST_STAGE)
    assert record.image_id == ids[0] and record.message == f"{scribble}: is a directory, not a scribble file"


def test_png_data_in_a_jpg_is_ingested_with_a_warning_record(synthetic_root, tmp_path):
    import shutil

    from PIL import Image

    root = tmp_path / "png"
    shutil.copytree(synthetic_root, root)
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    jpg = root / "JPEGImages" / f"{ids[0]}.jpg"
    Image.open(jpg).save(jpg, format="PNG")
    summary = flow_result(ingest_flow, root=str(root), workspace=str(tmp_path / "ws"), execution=Execution(progress=False))
    assert summary.ok and summary.done == len(ids)
    records = {r.image_id: r.message for r in Workspace(tmp_path / "ws").warnings(INGEST_STAGE)}
    assert records == {ids[0]: f"{ids[0]}.jpg: PNG data in a .jpg file (read as PNG)"}


def test_empty_dataset_and_foreign_workspace_are_refused(synthetic_root, tmp_path):
    import shutil

    empty = tmp_path / "empty"
    shutil.copytree(synthetic_root, empty)
    (empty / "ImageSets/Segmentation/train.txt").write_text("")
    with pytest.raises(DatasetError, match="empty"):
        ingest_flow(root=str(empty), workspace=str(tmp_path / "ws1"), execution=Execution(progress=False))

    ingest_flow(root=str(synthetic_root), workspace=str(tmp_path / "ws2"), execution=Execution(progress=False))
    other = tmp_path / "other"
    shutil.copytree(synthetic_root, other)
    (other / "classes.txt").write_text("background\nthing\n")
    with pytest.raises(WorkspaceError, match="made from dataset"):
        ingest_flow(root=str(other), workspace=str(tmp_path / "ws2"), execution=Execution(progress=False))


def test_an_id_removed_from_its_split_list_loses_its_failure_record(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    lists = root / "ImageSets/Segmentation"
    train = (lists / "train.txt").read_text()
    (lists / "train.txt").write_text(train + "gone_from_train\n")
    (lists / "val.txt").write_text((lists / "val.txt").read_text() + "missing_in_val\n")
    workspace = str(tmp_path / "ws")
    flow_result(ingest_flow, root=str(root), workspace=workspace, split="train", execution=Execution(progress=False))
    flow_result(ingest_flow, root=str(root), workspace=workspace, split="val", execution=Execution(progress=False))
    ws = Workspace(workspace)
    assert {r.image_id: r.splits for r in ws.failures(INGEST_STAGE)} == {
        "gone_from_train": ("train",), "missing_in_val": ("val",)
    }
    (lists / "train.txt").write_text(train)
    again = flow_result(ingest_flow, root=str(root), workspace=workspace, split="train", execution=Execution(progress=False))
    assert again.ok and again.total == len(train.split())
    # the run and status now agree; val's failure was not train's to drop
    assert [r.image_id for r in ws.failures(INGEST_STAGE)] == ["missing_in_val"]
    assert ws.status(INGEST_STAGE).failed == 1


def test_the_ingest_key_ignores_max_side_but_not_stroke_width():
    from wsss_core.config import config_hash
    from flows.ingest import ingest_config, ingest_key
    from wsss_core.data.image_io import ReadOptions

    description = {"name": "voc:x", "format": "voc", "root": "/x", "classes": ["background", "a"], "split": "train"}
    default = ingest_config(description, None, ReadOptions())
    assert default == ingest_config(description, None, ReadOptions(max_side=6000))
    assert default != ingest_config(description, None, ReadOptions(scribble_stroke_width=5))
    key = ingest_key(default, None)
    assert ingest_key(default, {"key": key, "config": default}) == key
    # a workspace made when max_side was in the key keeps its key, whatever the limit now
    legacy = {**default, "options": {"max_side": 4096, "scribble_stroke_width": 3}}
    legacy_meta = {"key": config_hash(legacy), "config": legacy}
    assert ingest_key(ingest_config(description, None, ReadOptions(max_side=6000)), legacy_meta) == config_hash(legacy)
    assert ingest_key(ingest_config(description, None, ReadOptions(scribble_stroke_width=5)), legacy_meta) != config_hash(legacy)


def add_large_image(root, tmp_path, image_id="big_000000", width=160, height=120):
    """Copy one image of a larger synthetic dataset (all its files) into root's train list."""
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    big = generate_dataset(tmp_path / "big", SyntheticConfig(n_images=1, width=width, height=height, seed=5))
    source = (big / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    for folder in ("Annotations", "JPEGImages", "SegmentationClass", "scribbles"):
        for path in (big / folder).glob(f"{source}.*"):
            (root / folder / f"{image_id}{path.suffix}").write_bytes(path.read_bytes())
    with open(root / "ImageSets/Segmentation/train.txt", "a") as handle:
        handle.write(f"{image_id}\n")


def test_a_new_max_side_re_reads_nothing_and_retries_the_refused_images(synthetic_root, tmp_path):
    import shutil

    from flows.superpixels import superpixels_flow
    from wsss_core.data.image_io import ReadOptions

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    add_large_image(root, tmp_path)
    workspace = str(tmp_path / "ws")
    quiet = Execution(progress=False)
    first = flow_result(ingest_flow, root=str(root), workspace=workspace, options=ReadOptions(max_side=100), execution=quiet)
    assert list(first.failed) == ["big_000000"] and "larger than max_side=100" in first.failed["big_000000"]
    flow_result(superpixels_flow, workspace=workspace, execution=quiet)
    ws = Workspace(workspace)
    key = ws.stage_key(INGEST_STAGE)
    small = ws.image_ids()
    marker_times = {i: (ws.path / "markers/ingest" / key / f"{i}.json").stat().st_mtime_ns for i in small}

    smaller = flow_result(ingest_flow, root=str(root), workspace=workspace, options=ReadOptions(max_side=50), execution=quiet)
    assert smaller.done == 0 and smaller.skipped == len(small)  # kept, not re-read (nor refused)
    larger = flow_result(ingest_flow, root=str(root), workspace=workspace, options=ReadOptions(max_side=6000), execution=quiet)
    assert larger.ok and larger.done == 1 and larger.skipped == len(small)
    assert ws.stage_key(INGEST_STAGE) == key and not ws.is_stale("superpixels")
    assert ws.array_shape("images", "big_000000") == (120, 160, 3)
    assert ws.failures(INGEST_STAGE) == []
    for image_id, mtime in marker_times.items():
        assert (ws.path / "markers/ingest" / key / f"{image_id}.json").stat().st_mtime_ns == mtime
    assert ws.done_ids("superpixels") == set(small)  # the new image is pending there, the rest kept
