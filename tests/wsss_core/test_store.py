import json
import multiprocessing

import numpy as np
import pytest

from wsss_core.errors import BadInputError, WorkspaceError
from wsss_core.store import INGEST_STAGE, Workspace, check_image_id

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
