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
