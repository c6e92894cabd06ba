import numpy as np
from prefect import flow, task

from tasks.common import STAGE_TASK_OPTIONS, run_batch_in_task
from wsss_core.errors import BadInputError
from wsss_core.store import Workspace

STAGE = "toy"


@task(**{**STAGE_TASK_OPTIONS, "retry_delay_seconds": 0})
def toy_batch(workspace: Workspace, key: str, image_ids: list[str], flaky_failures: int):
    counter = workspace.path / "attempts.txt"

    def step(image_id):
        if image_id == "flaky":
            attempts = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(attempts + 1))
            if attempts < flaky_failures:
                raise TimeoutError("storage did not answer")
        if image_id == "bad":
            raise BadInputError("bad.png", "cannot decode image")
        workspace.write_array(STAGE, image_id, np.zeros((1, 1), np.uint8))

    return run_batch_in_task(workspace, STAGE, key, image_ids, step)


@flow
def toy_flow(path: str, flaky_failures: int):
    ws = Workspace(path)
    ws.begin_stage(STAGE, "k", {})
    return toy_batch(ws, "k", ["a", "flaky", "bad"], flaky_failures)


def test_transient_errors_are_retried_by_prefect_and_bad_input_is_not(tmp_path):
    report = toy_flow(str(tmp_path), flaky_failures=1)
    ws = Workspace(tmp_path)
    assert (tmp_path / "attempts.txt").read_text() == "2"  # retried once, then fine
    assert report.done == ["flaky"] and report.skipped == ["a"]  # the retry skipped what was done
    assert ws.done_ids(STAGE) == {"a", "flaky"}
    assert [r.image_id for r in ws.failures(STAGE)] == ["bad"]


def test_transient_errors_recorded_when_retries_run_out(tmp_path):
    report = toy_flow(str(tmp_path), flaky_failures=10)
    ws = Workspace(tmp_path)
    assert int((tmp_path / "attempts.txt").read_text()) == STAGE_TASK_OPTIONS["retries"] + 1
    kinds = {r.image_id: r.kind for r in ws.failures(STAGE)}
    assert kinds == {"flaky": "transient", "bad": "BadInputError"}
    assert "flaky" in report.failed
