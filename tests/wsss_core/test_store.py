import json
import multiprocessing

import numpy as np
import pytest

from wsss_core.errors import BadInputError, StoredArrayError, WorkspaceError
from wsss_core.store import INGEST_STAGE, Workspace, check_image_id, forget_open_packs, prune_failures, split_counts

DATASET = {"name": "voc:toy", "format": "voc", "root": "/data/toy", "classes": ["background", "cat"], "split": "train"}


def make_workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.bind_dataset(DATASET)
    ws.begin_stage(INGEST_STAGE, "k0", {})
    return ws


def test_array_round_trip_and_shape(tmp_path):
    ws = make_workspace(tmp_path)
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    ws.write_array("images", "a", image)
    ws.write_array("boxes", "a", np.zeros((0, 5), np.int32))
    assert np.array_equal(ws.read_array("images", "a"), image)
    assert ws.array_shape("images", "a") == (4, 5, 3)
    assert ws.read_array("boxes", "a").shape == (0, 5)
    with pytest.raises(WorkspaceError, match="no array images/b"):
        ws.read_array("images", "b")


def test_markers_decide_done_and_key_change_clears_them(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {"n": 1}, {INGEST_STAGE: "k0"})
    ws.mark_done("superpixels", "a", "k1")
    ws.record_failure("superpixels", "b", "ValueError", "bad", "k1")
    assert ws.is_done("superpixels", "a", "k1")
    assert not ws.is_done("superpixels", "a", "other")
    assert ws.done_ids("superpixels") == {"a"}
    assert not ws.begin_stage("superpixels", "k1", {"n": 1})  # same key: nothing changes
    assert ws.done_ids("superpixels") == {"a"}
    assert ws.begin_stage("superpixels", "k2", {"n": 2})  # new config: old markers and records go
    assert ws.done_ids("superpixels") == set()
    assert ws.failures("superpixels") == []
    assert ws.stage_meta("superpixels")["config"] == {"n": 2}


def test_stale_when_an_upstream_key_changes(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {}, {INGEST_STAGE: "k0"})
    assert not ws.is_stale("superpixels")
    ws.begin_stage(INGEST_STAGE, "k0-new", {})
    assert ws.is_stale("superpixels")


def test_status_counts(tmp_path):
    ws = make_workspace(tmp_path)
    for image_id in ["a", "b", "c", "d"]:
        ws.mark_done(INGEST_STAGE, image_id, "k0")
    ws.record_failure(INGEST_STAGE, "../evil", "BadInputError", "escapes the root", "k0")
    ws.begin_stage("superpixels", "k1", {})
    ws.mark_done("superpixels", "a", "k1")
    ws.record_failure("superpixels", "b", "ValueError", "boom", "k1")
    st = ws.status("superpixels")
    assert (st.done, st.failed, st.pending) == (1, 1, 2)
    ingest = ws.status(INGEST_STAGE)
    assert (ingest.done, ingest.failed, ingest.pending) == (4, 1, 0)
    assert ws.image_ids() == ["a", "b", "c", "d"]
    # over given images, failures of other images do not count
    st = ws.status("superpixels", ["a", "c"])
    assert (st.done, st.failed, st.pending) == (1, 0, 1)
    ingest = ws.status(INGEST_STAGE, ["a", "e"])
    assert (ingest.done, ingest.failed, ingest.pending) == (1, 0, 1)
    # the record keeps the raw id even though its file name is sanitised
    assert [r.image_id for r in ws.failures(INGEST_STAGE)] == ["../evil"]


def test_failure_record_cleared_and_warnings_kept(tmp_path):
    ws = make_workspace(tmp_path)
    ws.record_failure("ingest", "a", "BadInputError", "truncated", "k0")
    ws.clear_failure("ingest", "a")
    assert ws.failures("ingest") == []
    ws.record_warnings("ingest", "a", ["converted grayscale to RGB"], "k0")
    assert ws.warnings("ingest")[0].message == "converted grayscale to RGB"


def test_another_dataset_is_refused(tmp_path):
    ws = make_workspace(tmp_path)
    ws.bind_dataset({**DATASET, "split": "val"})  # same dataset, another split: fine
    assert ws.dataset["splits"] == ["train", "val"]
    with pytest.raises(WorkspaceError, match="made from dataset 'voc:toy'.*root, classes differ"):
        ws.bind_dataset({**DATASET, "root": "/data/other", "classes": ["background", "dog"]})


def test_image_ids_are_checked():
    assert check_image_id("2007_000032") == "2007_000032"
    for bad in ["../x", "a/b", "", ".hidden", "a b"]:
        with pytest.raises(BadInputError, match="invalid image id"):
            check_image_id(bad)


def ingested_workspace(tmp_path, ids=("a", "b", "c", "d")) -> Workspace:
    ws = make_workspace(tmp_path)
    for image_id in ids:
        ws.mark_done(INGEST_STAGE, image_id, "k0")
    return ws


def test_splits_record_members_and_select_ids(tmp_path):
    ws = ingested_workspace(tmp_path)
    ws.add_to_split("train", ["a", "b"])
    ws.add_to_split("val", ["c", "e"])  # e is not ingested: recorded, never selected
    ws.add_to_split("train", ["b", "c"])  # union with what is there
    ws.add_to_split("train", ["a"])  # nothing new: idempotent
    assert ws.splits() == ["train", "val"]
    assert ws.split_ids("train") == ["a", "b", "c"]
    assert ws.split_ids("val") == ["c"]
    assert ws.image_splits("c") == ["train", "val"]
    assert ws.image_splits("d") == [] and ws.image_splits("e") == []
    assert ws.select_ids(["val"]) == ["c"]
    assert ws.select_ids(["val", "train"]) == ["a", "b", "c"]
    # d is ingested but no split names it (any more): it is not in the dataset
    assert ws.select_ids(None) == ws.select_ids([]) == ws.image_ids() == ["a", "b", "c"]
    assert ws.dropped_ids() == ["d"]
    with pytest.raises(WorkspaceError, match=r"^no split 'test' in this workspace \(splits: train, val\)$"):
        ws.select_ids(["train", "test"])
    assert json.loads((ws.path / "splits/train.json").read_text())["ids"] == ["a", "b", "c"]


def test_bad_split_name_is_refused_in_one_line(tmp_path):
    ws = ingested_workspace(tmp_path)
    for bad in ["../x", "a/b", "", ".hidden", "a b", "train\nval", "x" * 101]:
        with pytest.raises(WorkspaceError, match="invalid split name") as raised:
            ws.add_to_split(bad, ["a"])
        assert "\n" not in str(raised.value)
    assert not (ws.path / "splits").exists()
    ws.add_to_split("train-2012.v1_aug", ["a"])
    assert ws.splits() == ["train", "train-2012.v1_aug"]


def old_style_workspace(tmp_path, splits: list[str]) -> Workspace:
    """A workspace as made before per-image splits: split names at dataset level only."""
    ws = ingested_workspace(tmp_path)
    ws._update_attrs(dataset={**{k: v for k, v in DATASET.items() if k != "split"}, "splits": splits})
    return ws


def test_old_workspace_with_one_split_holds_every_image(tmp_path):
    ws = old_style_workspace(tmp_path, ["train"])
    assert ws.unrecorded_splits() == []
    assert ws.select_ids(["train"]) == ws.split_ids("train") == ["a", "b", "c", "d"]
    assert ws.image_splits("a") == ["train"]
    # adding a second split first writes the first one's images down
    ws.bind_dataset({**DATASET, "split": "val"})
    ws.mark_done(INGEST_STAGE, "v", "k0")
    ws.add_to_split("val", ["v"])
    assert ws.select_ids(["train"]) == ["a", "b", "c", "d"]
    assert ws.select_ids(["val"]) == ["v"]


def test_old_workspace_with_several_splits_asks_for_a_re_ingest(tmp_path):
    ws = old_style_workspace(tmp_path, ["train", "val"])
    assert ws.unrecorded_splits() == ["train", "val"]
    assert ws.select_ids(None) == ["a", "b", "c", "d"]
    with pytest.raises(WorkspaceError, match="re-run `wsss ingest --split train` and `wsss ingest --split val`"):
        ws.select_ids(["val", "train"])
    with pytest.raises(WorkspaceError, match=r"split\(s\) train, val is not recorded"):
        ws.image_splits("a")
    assert split_counts(ws, INGEST_STAGE) == {}  # unrecorded splits are left out
    ws.add_to_split("train", ["a", "b"])
    assert ws.select_ids(["train"]) == ["a", "b"]
    with pytest.raises(WorkspaceError, match="re-run `wsss ingest --split val`"):
        ws.select_ids(["train", "val"])


def test_split_counts(tmp_path):
    ws = ingested_workspace(tmp_path)
    ws.add_to_split("train", ["a", "b", "c"])
    ws.add_to_split("val", ["d"])
    ws.record_failure(INGEST_STAGE, "x", "BadInputError", "truncated", "k0")
    ws.record_failure(INGEST_STAGE, "y", "BadInputError", "truncated", "k0", splits=["val"])
    ws.begin_stage("superpixels", "k1", {})
    ws.mark_done("superpixels", "a", "k1")
    ws.record_failure("superpixels", "b", "ValueError", "boom", "k1")
    counts = {s: (st.done, st.failed, st.pending) for s, st in split_counts(ws, "superpixels").items()}
    assert counts == {"train": (1, 1, 1), "val": (0, 0, 1)}
    counts = {s: (st.done, st.failed, st.pending) for s, st in split_counts(ws, INGEST_STAGE).items()}
    assert counts == {"train": (3, 0, 0), "val": (1, 1, 0)}  # x names no split
    whole = ws.status(INGEST_STAGE)
    assert (whole.done, whole.failed, whole.pending) == (4, 2, 0)


def _write_records(path, worker):
    ws = Workspace(path)
    for i in range(50):
        ws.record_failure("superpixels", f"img{i:03d}", "ValueError", f"worker {worker}", "k")
        ws.mark_done("superpixels", f"w{worker}_{i:03d}", "k")


def test_records_and_markers_from_many_processes(tmp_path):
    ws = make_workspace(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_records, args=(ws.path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = ws.failures("superpixels")
    assert len(records) == 50  # one per image, each whole JSON from some worker
    assert {r.message for r in records} <= {"worker 0", "worker 1", "worker 2"}
    assert len(ws.done_ids("superpixels", "k")) == 150
    leftovers = [p for p in (ws.path / "records").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert json.loads((ws.path / "records/failures/superpixels/img000.json").read_text())["kind"] == "ValueError"


def test_distinct_invalid_ids_never_share_a_record(tmp_path):
    ws = make_workspace(tmp_path)
    bad = ["uni_é", "uni_ü", "../x", "..\\x", "a b"]
    for image_id in bad:
        ws.record_failure(INGEST_STAGE, image_id, "BadInputError", f"bad {image_id}", "k0")
    ws.record_failure(INGEST_STAGE, "good", "BadInputError", "bad good", "k0")
    assert sorted(r.image_id for r in ws.failures(INGEST_STAGE)) == sorted([*bad, "good"])
    assert ws.status(INGEST_STAGE).failed == len(bad) + 1
    # valid ids keep their plain record names, so older workspaces stay readable
    assert (ws.path / "records/failures/ingest/good.json").is_file()
    ws.clear_failure(INGEST_STAGE, "uni_é")
    assert sorted(r.image_id for r in ws.failures(INGEST_STAGE)) == sorted(["uni_ü", "../x", "..\\x", "a b", "good"])


def test_ingest_failures_follow_the_split_lists(tmp_path):
    ws = ingested_workspace(tmp_path)
    ws.bind_dataset({**DATASET, "split": "val"})
    for image_id in ("x", "y", "z"):
        ws.record_failure(INGEST_STAGE, image_id, "BadInputError", "unreadable jpeg", "k0")
    # train lists x and y, val lists y and z: each record learns its splits
    ws.reconcile_ingest_failures({"train": ["a", "x", "y"]})
    ws.reconcile_ingest_failures({"val": ["b", "y", "z"]})
    splits = {r.image_id: r.splits for r in ws.failures(INGEST_STAGE)}
    assert splits == {"x": ("train",), "y": ("train", "val"), "z": ("val",)}
    # y leaves train's list: it stays for val; x leaves train: gone; val's z is untouched
    dropped = ws.reconcile_ingest_failures({"train": ["a", "b"]})
    assert [r.image_id for r in dropped] == ["x"]
    assert {r.image_id: r.splits for r in ws.failures(INGEST_STAGE)} == {"y": ("val",), "z": ("val",)}
    assert ws.status(INGEST_STAGE).failed == 2
    ws.reconcile_ingest_failures({"val": ["b"]})
    assert ws.failures(INGEST_STAGE) == [] and ws.status(INGEST_STAGE).failed == 0


def test_records_without_splits_go_only_when_every_split_was_judged(tmp_path):
    ws = ingested_workspace(tmp_path)  # one split, train
    path = ws.path / "records/failures/ingest/old.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"stage": "ingest", "image_id": "old", "kind": "BadInputError", "message": "m", "key": "k0"}))
    assert ws.failures(INGEST_STAGE)[0].splits == ()  # an older record still loads
    ws.bind_dataset({**DATASET, "split": "val"})
    ws.reconcile_ingest_failures({"val": ["a"]})  # train was not judged: old may be train's
    assert [r.image_id for r in ws.failures(INGEST_STAGE)] == ["old"]
    ws.reconcile_ingest_failures({"train": ["a", "b"], "val": ["c"]})
    assert ws.failures(INGEST_STAGE) == []


def test_prune_failures_drops_every_stage_s_records_of_unknown_ids(tmp_path):
    ws = ingested_workspace(tmp_path)
    ws.begin_stage("seeds/scribbles", "k2", {})
    ws.record_failure(INGEST_STAGE, "gone", "BadInputError", "m", "k0")
    ws.record_failure(INGEST_STAGE, "../x", "BadInputError", "m", "k0")
    ws.record_failure("seeds/scribbles", "gone", "ValueError", "m", "k2")
    ws.record_failure("seeds/scribbles", "a", "ValueError", "m", "k2")
    ws.record_warnings("seeds/scribbles", "gone", ["note"], "k2")
    dropped = prune_failures(ws, ["a", "b", "c", "d", "../x"])
    assert sorted((r.stage, r.image_id) for r in dropped) == [("ingest", "gone"), ("seeds/scribbles", "gone")]
    assert [r.image_id for r in ws.failures(INGEST_STAGE)] == ["../x"]
    assert [r.image_id for r in ws.failures("seeds/scribbles")] == ["a"]
    assert [r.image_id for r in ws.warnings("seeds/scribbles")] == ["gone"]


def test_status_ignores_failures_of_another_config(tmp_path):
    ws = ingested_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    ws.record_failure("superpixels", "a", "ValueError", "boom", "k1")
    ws.record_failure("superpixels", "b", "ValueError", "boom", "k-old")  # left by an interrupted run
    assert ws.status("superpixels").failed == 1


def truncate_chunk(ws: Workspace, array_path: str):
    chunks = [p for p in (ws.store_path / array_path / "c").rglob("*") if p.is_file()]
    assert len(chunks) == 1, chunks
    chunks[0].write_bytes(chunks[0].read_bytes()[:10])
    return chunks[0]


def test_an_unreadable_stored_array_is_named_with_its_stage_and_file(tmp_path):
    from wsss_core.errors import StoredArrayError

    ws = make_workspace(tmp_path)
    ws.write_array("images", "a", np.arange(60, dtype=np.uint8).reshape(4, 5, 3))
    ws.write_array("graphs", "a", np.arange(6, dtype=np.int64).reshape(3, 2), name="edges")
    chunk = truncate_chunk(ws, "images/a")
    with pytest.raises(StoredArrayError) as caught:
        ws.read_array("images", "a")
    error = caught.value
    assert (error.stage, error.array, error.image_id, error.path) == (INGEST_STAGE, "images", "a", str(chunk))
    assert str(chunk) in str(error) and "stage ingest" in str(error) and "decompression" in str(error).lower()
    truncate_chunk(ws, "graphs/a/edges")
    with pytest.raises(StoredArrayError, match=r"graphs/a/edges \(stage graphs\)") as caught:
        ws.read_array("graphs", "a", "edges")
    assert caught.value.stage == "graphs" and caught.value.name == "edges"
    (ws.store_path / "graphs/a/edges/zarr.json").write_text("{broken")
    with pytest.raises(StoredArrayError, match=r"edges/zarr.json: stored array"):
        ws.array_shape("graphs", "a", "edges")
    (ws.store_path / "graphs/a/edges/zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
    with pytest.raises(StoredArrayError, match=r"edges/zarr.json: stored array"):
        ws.read_array("graphs", "a", "edges")
    with pytest.raises(WorkspaceError, match="no array images/b"):  # missing is not unreadable
        ws.read_array("images", "b")


def test_owning_stage():
    from wsss_core.store import owning_stage

    assert [owning_stage(a) for a in ("images", "gt", "scribbles", "boxes", "tags")] == [INGEST_STAGE] * 5
    assert owning_stage("superpixels") == "superpixels"
    assert owning_stage("seeds/scribbles") == "seeds/scribbles"


def test_invalidate_makes_an_image_not_done(tmp_path):
    ws = ingested_workspace(tmp_path)
    ws.add_to_split("train", ["a", "b"])
    ws.add_to_split("val", ["c", "d"])
    ws.invalidate(INGEST_STAGE, "a", "unreadable", "images/a/c/0/0/0: broken")
    assert ws.image_ids() == ["b", "c", "d"] and ws.split_ids("train") == ["b"]
    [record] = ws.failures(INGEST_STAGE)
    assert (record.image_id, record.kind, record.splits, record.key) == ("a", "unreadable", ("train",), "k0")
    assert ws.status(INGEST_STAGE).failed == 1


# ------------------------------------------------------------------------ packs


def pack_files(ws: Workspace, group: str) -> list:
    return sorted(p.parent for p in (ws.store_path / group / "_packs").glob("*/zarr.json"))


def write_batch(ws: Workspace, stage: str, key: str, ids, value=0, limit_bytes=None):
    """As run_batch does: an image's arrays, then its marker, all flushed at the end."""
    with ws.packing(stage, key, limit_bytes) as batch:
        for n, image_id in enumerate(ids):
            ws.write_array(stage, image_id, np.full((3 + n, 4), value + n, np.int32))
            ws.write_array(stage, image_id, np.arange(n + 1, dtype=np.float16), name="extra", attributes={"n": n})
            ws.mark_done(stage, image_id, key)
            if batch.full:
                batch.flush()
        return batch.flush()


def test_a_batch_writes_one_pack_per_array_then_the_markers(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    with ws.packing("superpixels", "k1") as batch:
        ws.write_array("superpixels", "a", np.full((3, 4), 7, np.int32), attributes={"confidence": 0.5})
        ws.mark_done("superpixels", "a", "k1")
        assert not ws.is_done("superpixels", "a", "k1")  # not before its pack is written
        assert ws.read_array("superpixels", "a")[0, 0] == 7 and ws.array_shape("superpixels", "a") == (3, 4)
        ws.write_array("superpixels", "b", np.full((2, 2), 9, np.int32))
        ws.mark_done("superpixels", "b", "k1")
        assert pack_files(ws, "superpixels") == []
        assert batch.flush() == (["a", "b"], {})
    assert ws.done_ids("superpixels") == {"a", "b"}
    [pack] = pack_files(ws, "superpixels")
    assert [p.name for p in (pack / "c").rglob("*") if p.is_file()] == ["0"]  # one shard file
    assert np.array_equal(ws.read_array("superpixels", "b"), np.full((2, 2), 9, np.int32))
    assert ws.read_array("superpixels", "a").dtype == np.int32
    assert ws.array_attributes("superpixels", "a") == {"confidence": 0.5} and ws.array_attributes("superpixels", "b") == {}
    assert ws.has_array("superpixels", "a") and not ws.has_array("superpixels", "a", "other")
    assert ws.image_arrays("superpixels", "a") == [("superpixels", None)]
    assert ws.array_file("superpixels", "a") == str(pack / "c" / "0" / "0")
    assert not (ws.store_path / "superpixels" / "a").exists()  # no array of its own


def test_packs_hold_named_arrays_and_flush_early_when_full(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("graphs", "k2", {})
    done, errors = write_batch(ws, "graphs", "k2", ["a", "b", "c"], value=10, limit_bytes=100)
    assert errors == {} and ws.done_ids("graphs") == {"a", "b", "c"}
    assert len(pack_files(ws, "graphs")) == 2 * 2  # flushed after "b" (over 100 bytes), then "c"
    for n, image_id in enumerate(["a", "b", "c"]):
        assert np.array_equal(ws.read_array("graphs", image_id), np.full((3 + n, 4), 10 + n, np.int32))
        assert np.array_equal(ws.read_array("graphs", image_id, "extra"), np.arange(n + 1, dtype=np.float16))
        assert ws.array_attributes("graphs", image_id, "extra") == {"n": n}
    assert ws.image_arrays("graphs", "b") == [("graphs", None), ("graphs", "extra")]


def test_a_failed_or_unfinished_image_leaves_nothing_done(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    with ws.packing("superpixels", "k1") as batch:
        ws.write_array("superpixels", "a", np.ones((2, 2), np.int32))
        ws.mark_done("superpixels", "a", "k1")
        ws.write_array("superpixels", "bad", np.ones((2, 2), np.int32))
        batch.discard("bad")  # its step failed
        ws.write_array("superpixels", "late", np.ones((2, 2), np.int32))  # a step under way
        assert batch.flush() == (["a"], {})
    ws.write_array("superpixels", "x", np.ones((1, 1), np.int32))  # after the block: written at once
    with ws.packing("superpixels", "k1"):
        ws.write_array("superpixels", "crash", np.ones((2, 2), np.int32))
        ws.mark_done("superpixels", "crash", "k1")  # the batch never flushed (a crash)
    assert ws.done_ids("superpixels") == {"a"}
    for image_id in ("bad", "late", "crash"):
        assert not ws.has_array("superpixels", image_id)
    assert ws.has_array("superpixels", "x") and ws.image_arrays(INGEST_STAGE, "x") is None


def test_a_pack_flush_that_fails_marks_nothing(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Workspace, "_write_pack", broken)
    done, errors = write_batch(ws, "superpixels", "k1", ["a", "b"])
    assert done == [] and set(errors) == {"a", "b"} and "disk full" in str(errors["a"])
    assert ws.done_ids("superpixels") == set()


def test_a_recomputed_image_goes_to_a_new_pack_and_a_new_config_drops_the_old_packs(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    write_batch(ws, "superpixels", "k1", ["a", "b"], value=0)
    ws.invalidate("superpixels", "b", "unreadable", "broken")  # `wsss check` found it damaged
    write_batch(ws, "superpixels", "k1", ["b"], value=50)  # a retry of that one image
    assert len(pack_files(ws, "superpixels")) == 2 * 2  # two batches of two arrays
    assert ws.read_array("superpixels", "a")[0, 0] == 0 and ws.read_array("superpixels", "b")[0, 0] == 50
    assert ws.begin_stage("superpixels", "k2", {"n": 2})
    assert pack_files(ws, "superpixels") == [] and ws.done_ids("superpixels") == set()
    assert not ws.has_array("superpixels", "a")


def test_an_old_workspace_s_arrays_stay_readable_and_go_when_recomputed(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("graphs", "k2", {})
    ws.begin_stage("superpixels", "k1", {})
    for image_id in ("a", "b"):  # as workspaces from before packs hold them
        ws.write_array("graphs", image_id, np.full((2, 2), 1, np.int32), name="edges")
        ws.write_array("graphs", image_id, np.arange(3, dtype=np.float16), name="weights")
        ws.mark_done("graphs", image_id, "k2")
        ws.write_array("superpixels", image_id, np.full((2, 2), 1, np.int32))
        ws.mark_done("superpixels", image_id, "k1")
    assert ws.image_arrays("graphs", "a") is None and ws.read_array("graphs", "a", "weights").size == 3
    ws.invalidate("graphs", "a", "unreadable", "broken")
    ws.invalidate("superpixels", "a", "unreadable", "broken")
    with ws.packing("graphs", "k2") as batch:
        ws.write_array("graphs", "a", np.full((2, 2), 5, np.int32), name="edges")
        ws.write_array("graphs", "a", np.arange(4, dtype=np.float16), name="weights")
        ws.mark_done("graphs", "a", "k2")
        batch.flush()
    write_batch(ws, "superpixels", "k1", ["a"], value=5)
    assert ws.read_array("graphs", "a", "edges")[0, 0] == 5 and ws.read_array("superpixels", "a")[0, 0] == 5
    assert not (ws.store_path / "graphs" / "a").exists() and not (ws.store_path / "superpixels" / "a").exists()
    assert ws.read_array("graphs", "b", "edges")[0, 0] == 1 and (ws.store_path / "graphs" / "b" / "edges").is_dir()


def test_a_damaged_pack_is_named_for_each_of_its_images(tmp_path):
    from tests.storage_helpers import damage, pack_mates
    from wsss_core.errors import StoredArrayError

    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    write_batch(ws, "superpixels", "k1", ["a", "b", "c"])
    assert pack_mates(ws, "superpixels", "b") == {"a", "b", "c"}
    chunk = damage(ws, "superpixels", "b")  # a small pack is one chunk: all its images go with it
    for image_id in ("a", "b", "c"):
        forget_open_packs()
        with pytest.raises(StoredArrayError) as caught:
            ws.read_array("superpixels", image_id)
        assert (caught.value.stage, caught.value.image_id, caught.value.path) == ("superpixels", image_id, str(chunk))


def test_a_damaged_sharded_pack_makes_only_its_damaged_rows_unreadable(tmp_path, monkeypatch):
    from tests.storage_helpers import damage
    from wsss_core.errors import StoredArrayError
    from wsss_core.store import packs

    monkeypatch.setattr(packs, "ONE_CHUNK_BYTES", 0)  # every pack as big ones are: a shard, an inner chunk per row
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    with ws.packing("superpixels", "k1") as batch:
        for n, image_id in enumerate(["a", "b", "c"]):
            ws.write_array("superpixels", image_id, np.arange(40, dtype=np.int32).reshape(5, 8) + n)
            ws.mark_done("superpixels", image_id, "k1")
        batch.flush()
    shard = damage(ws, "superpixels", "b")
    with pytest.raises(StoredArrayError) as caught:
        ws.read_array("superpixels", "b")
    assert (caught.value.stage, caught.value.image_id, caught.value.path) == ("superpixels", "b", str(shard))
    assert ws.read_array("superpixels", "a")[0, 1] == 1 and ws.read_array("superpixels", "c")[0, 0] == 2
    damage(ws, "superpixels", "a", whole_file=True)  # a copy cut short: the pack's index is gone
    for image_id in ("a", "c"):
        with pytest.raises(StoredArrayError, match="superpixels/_packs/"):
            ws.read_array("superpixels", image_id)
    shard.unlink()  # gone: not the fill value Zarr would hand back for a chunk never written
    forget_open_packs()
    for image_id in ("a", "b", "c"):
        with pytest.raises(StoredArrayError, match="missing"):
            ws.read_array("superpixels", image_id)


def test_a_batch_read_image_by_image_reads_its_pack_once_and_hands_out_copies(tmp_path):
    from wsss_core.store import forget_open_packs

    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    write_batch(ws, "superpixels", "k1", ["a", "b", "c", "d"])
    forget_open_packs()
    first = ws.read_array("superpixels", "a")  # one row
    second = ws.read_array("superpixels", "b")  # read from again: the whole pack, kept
    first[...] = -1
    second[...] = -1  # the caller's copy: what is kept stays as read
    [pack] = [p for p in pack_files(ws, "superpixels") if not p.name.endswith(".extra")]
    (pack / "c" / "0" / "0").unlink()  # from here on only the kept rows can serve the pack
    for n, image_id in enumerate(["a", "b", "c", "d"]):
        assert np.array_equal(ws.read_array("superpixels", image_id), np.full((3 + n, 4), n, np.int32))
    forget_open_packs()
    with pytest.raises(StoredArrayError, match="unreadable"):  # read from disk again: its chunk is gone
        ws.read_array("superpixels", "c")


def _write_batches(path, worker: int, batches: int) -> None:
    ws = Workspace(path)
    for b in range(batches):
        write_batch(ws, "superpixels", "k1", [f"w{worker}_{b}_{i}" for i in range(8)], value=1000 * worker + 10 * b)


def test_batches_written_by_many_processes_at_once_stay_whole(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_batches, args=(ws.path, w, 4)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len(ws.done_ids("superpixels")) == 3 * 4 * 8 and len(pack_files(ws, "superpixels")) == 3 * 4 * 2
    for w in range(3):
        for b in range(4):
            for i in range(8):
                image_id = f"w{w}_{b}_{i}"
                assert np.array_equal(ws.read_array("superpixels", image_id), np.full((3 + i, 4), 1000 * w + 10 * b + i, np.int32))


def test_a_write_outside_a_batch_replaces_a_packed_array(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("graphs", "k2", {})
    write_batch(ws, "graphs", "k2", ["a", "b"], value=3)
    ws.write_array("graphs", "a", np.full((2, 2), 8, np.int32), name="extra")  # a fix by hand
    assert np.array_equal(ws.read_array("graphs", "a", "extra"), np.full((2, 2), 8, np.int32))
    assert ws.array_file("graphs", "a", "extra").startswith(str(ws.store_path / "graphs" / "a" / "extra"))
    assert ws.read_array("graphs", "a")[0, 0] == 3 and ws.read_array("graphs", "b", "extra").size == 2
    assert ws.image_arrays("graphs", "a") == [("graphs", None), ("graphs", "extra")]
