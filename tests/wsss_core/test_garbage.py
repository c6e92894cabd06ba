import numpy as np
import pytest

from tests.wsss_core.test_store import make_workspace, pack_files, write_batch
from wsss_core.errors import WorkspaceError
from wsss_core.garbage import collect_garbage
from wsss_core.store import INGEST_STAGE


def two_batches(tmp_path):
    """Images a, b in one pack and c, d in another, of the superpixels stage; a..d ingested."""
    ws = make_workspace(tmp_path)
    for image_id in "abcd":
        ws.mark_done(INGEST_STAGE, image_id, "k0")
    ws.begin_stage("superpixels", "k1", {})
    write_batch(ws, "superpixels", "k1", ["a", "b"])
    write_batch(ws, "superpixels", "k1", ["c", "d"], value=10)
    return ws


def test_gc_deletes_what_no_split_lists_and_keeps_every_other_array(tmp_path):
    ws = two_batches(tmp_path)
    ws.set_split("train", ["a", "c"])  # b and d left the dataset
    kept = {i: ws.read_array("superpixels", i) for i in "ac"}
    packs = len(pack_files(ws, "superpixels"))
    report = collect_garbage(ws)
    assert report.images == ["b", "d"] and report.markers == 4  # ingest and superpixels, each
    assert report.packs_rewritten == packs == 4 and report.packs_deleted == 0  # each pack still serves a or c
    assert report.bytes_freed > 0 and "2 image(s) no split lists" in report.line()
    assert ws.dropped_ids() == [] and ws.done_ids("superpixels") == {"a", "c"}
    for image_id, array in kept.items():
        assert np.array_equal(ws.read_array("superpixels", image_id), array)
    assert collect_garbage(ws).bytes_freed == 0  # nothing left to free


def test_gc_deletes_a_pack_none_of_whose_images_is_listed(tmp_path):
    ws = two_batches(tmp_path)
    ws.set_split("train", ["a", "b"])
    report = collect_garbage(ws)
    assert report.packs_deleted == 2 and report.packs_rewritten == 0  # c, d's pack of each array name
    assert len(pack_files(ws, "superpixels")) == 2  # a, b's: the array and its "extra"
    assert ws.read_array("superpixels", "b").shape == (4, 4)


def test_gc_needs_a_workspace(tmp_path):
    with pytest.raises(WorkspaceError, match="no workspace here"):
        from wsss_core.store import Workspace

        collect_garbage(Workspace(tmp_path / "none"))
