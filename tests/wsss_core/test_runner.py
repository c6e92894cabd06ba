import numpy as np
import pytest

from wsss_core.errors import BadInputError
from wsss_core.runner import run_batch, split_batches
from wsss_core.store import Workspace


@pytest.fixture
def ws(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.begin_stage("double", "k", {})
    return ws


def test_each_image_done_once_and_failures_do_not_stop_the_batch(ws):
    calls = []

    def step(image_id):
        calls.append(image_id)
        if image_id == "bad":
            raise BadInputError("bad.jpg", "cannot decode image")
        if image_id == "boom":
            raise ZeroDivisionError("division by zero")
        ws.write_array("double", image_id, np.full((2, 2), 2, np.uint8))
        return ["converted"] if image_id == "c" else None

    report = run_batch(ws, "double", "k", ["a", "bad", "boom", "c"], step)
    assert report.done == ["a", "c"]
    assert set(report.failed) == {"bad", "boom"}
    kinds = {r.image_id: r.kind for r in ws.failures("double")}
    assert kinds == {"bad": "BadInputError", "boom": "ZeroDivisionError"}
    assert ws.warnings("double")[0].image_id == "c"

    again = run_batch(ws, "double", "k", ["a", "bad", "boom", "c"], step)
    assert again.skipped == ["a", "c"]
    assert calls.count("a") == 1 and calls.count("bad") == 2


def test_transient_errors_wait_for_a_retry_then_become_failures(ws):
    attempts = {"n": 0}

    def step(image_id):
        if image_id == "flaky":
            attempts["n"] += 1
            raise OSError("stale NFS handle")
        ws.write_array("double", image_id, np.zeros((1, 1), np.uint8))

    first = run_batch(ws, "double", "k", ["a", "flaky"], step, final_attempt=False)
    assert first.done == ["a"] and first.transient == {"flaky": "stale NFS handle"}
    assert ws.failures("double") == []  # not recorded: a retry comes
    last = run_batch(ws, "double", "k", ["a", "flaky"], step, final_attempt=True)
    assert last.skipped == ["a"] and "flaky" in last.failed
    assert ws.failures("double")[0].kind == "transient"
    assert attempts["n"] == 2


def test_success_clears_an_old_failure(ws):
    ws.record_failure("double", "a", "OSError", "was broken", "k")
    run_batch(ws, "double", "k", ["a"], lambda i: ws.write_array("double", i, np.zeros((1, 1), np.uint8)))
    assert ws.failures("double") == [] and ws.is_done("double", "a", "k")


def test_split_batches():
    assert split_batches(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]
    with pytest.raises(ValueError):
        split_batches(["a"], 0)


def test_an_unreadable_input_array_sends_its_image_back_to_the_stage_that_wrote_it(ws):
    from wsss_core.runner import UNREADABLE

    ws.begin_stage("source", "s", {})
    for image_id in ("a", "b"):
        ws.write_array("source", image_id, np.full((3, 3), 1, np.uint8))
        ws.mark_done("source", image_id, "s")
    chunk = next(p for p in (ws.store_path / "source/b/c").rglob("*") if p.is_file())
    chunk.write_bytes(b"\x00garbage")

    def step(image_id):
        ws.write_array("double", image_id, ws.read_array("source", image_id) * 2)

    report = run_batch(ws, "double", "k", ["a", "b"], step)
    assert report.done == ["a"] and str(chunk) in report.failed["b"]
    for stage in ("double", "source"):
        [record] = ws.failures(stage)
        assert (record.image_id, record.kind) == ("b", UNREADABLE) and str(chunk) in record.message
    assert ws.done_ids("source") == {"a"}  # the source stage recomputes b on its next run


def test_a_batch_s_images_share_one_pack_and_are_done_only_when_it_is_written(ws):
    seen_done = []

    def step(image_id):
        seen_done.append(ws.is_done("double", "a", "k"))
        ws.write_array("double", image_id, np.full((2, 3), ord(image_id[0]), np.uint8))

    report = run_batch(ws, "double", "k", ["a", "b", "c"], step)
    assert report.done == ["a", "b", "c"] and seen_done == [False, False, False]
    assert len(list((ws.store_path / "double" / "_packs").glob("*/zarr.json"))) == 1
    assert ws.read_array("double", "b")[0, 0] == ord("b")


def test_an_interrupted_batch_marks_none_of_its_images_and_resumes(ws):
    def crashing(image_id):
        if image_id == "c":
            raise KeyboardInterrupt  # the process goes down mid-batch
        ws.write_array("double", image_id, np.ones((1, 1), np.uint8))

    with pytest.raises(KeyboardInterrupt):
        run_batch(ws, "double", "k", ["a", "b", "c"], crashing)
    assert ws.done_ids("double") == set()
    report = run_batch(ws, "double", "k", ["a", "b", "c"], lambda i: ws.write_array("double", i, np.ones((1, 1), np.uint8)))
    assert report.done == ["a", "b", "c"]


def test_a_pack_that_cannot_be_written_fails_its_images_as_passing_trouble(ws, monkeypatch):
    from wsss_core.store import Workspace

    real = Workspace._write_pack
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("connection reset")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Workspace, "_write_pack", flaky)
    step = lambda i: ws.write_array("double", i, np.ones((1, 1), np.uint8))  # noqa: E731
    first = run_batch(ws, "double", "k", ["a", "b"], step, final_attempt=False)
    assert first.done == [] and set(first.transient) == {"a", "b"} and ws.failures("double") == []
    again = run_batch(ws, "double", "k", ["a", "b"], step)
    assert again.done == ["a", "b"] and ws.done_ids("double") == {"a", "b"}
