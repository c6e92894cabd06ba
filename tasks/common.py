"""What every batched stage task shares: retry only on passing I/O trouble."""

from __future__ import annotations

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import State

from wsss_core.runner import BatchReport, Step, TransientBatchError, run_batch
from wsss_core.store import Workspace

BATCH_RETRIES = 2
BATCH_RETRY_DELAY_S = 2


def retry_on_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry a batch only when it raised TransientBatchError; a bad input would fail again."""
    try:
        state.result()
    except TransientBatchError:
        return True
    except Exception:  # noqa: BLE001 - any other error is not worth retrying
        return False
    return False


def run_batch_in_task(workspace: Workspace, stage: str, key: str, image_ids: list[str], step: Step) -> BatchReport:
    """run_batch inside a Prefect task: raise for a retry while retries are left."""
    context = TaskRunContext.get()
    final_attempt = context is None or context.task_run.run_count > context.task.retries
    report = run_batch(workspace, stage, key, image_ids, step, final_attempt=final_attempt)
    if report.transient:
        raise TransientBatchError(report)
    return report


STAGE_TASK_OPTIONS = dict(
    retries=BATCH_RETRIES,
    retry_delay_seconds=BATCH_RETRY_DELAY_S,
    retry_condition_fn=retry_on_transient,
    persist_result=False,
)
