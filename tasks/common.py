"""What every batched stage task shares: retry only on passing I/O trouble, block computation, device."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import State

from wsss_core.runner import BatchReport, Step, TransientBatchError, run_batch
from wsss_core.store import Workspace

if TYPE_CHECKING:  # torch itself is imported by the tasks that use it: a flow with nothing to do never loads it
    import torch

In = TypeVar("In")
Out = TypeVar("Out")

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


def run_batch_in_task(
    workspace: Workspace, stage: str, key: str, image_ids: list[str], step: Step, redo: Collection[str] = ()
) -> BatchReport:
    """run_batch inside a Prefect task: raise for a retry while retries are left."""
    context = TaskRunContext.get()
    final_attempt = context is None or context.task_run.run_count > context.task.retries
    report = run_batch(workspace, stage, key, image_ids, step, final_attempt=final_attempt, redo=redo)
    if report.transient:
        raise TransientBatchError(report)
    return report


STAGE_TASK_OPTIONS = dict(
    retries=BATCH_RETRIES,
    retry_delay_seconds=BATCH_RETRY_DELAY_S,
    retry_condition_fn=retry_on_transient,
    persist_result=False,
)



def run_block_in_task(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    load: Callable[[str], In],
    compute: Callable[[list[In]], list[Out]],
    write: Callable[[str, Out], None],
) -> BatchReport:
    """A batch computed as one block, then written image by image through run_batch.

    Images already done are not loaded. An image whose input fails to load is recorded
    and left out of the block. When the block's computation fails, each image is
    computed alone, so one bad input fails only itself.
    """
    pending = [i for i in image_ids if not workspace.is_done(stage, i, key)]
    inputs: dict[str, In] = {}
    errors: dict[str, Exception] = {}
    for image_id in pending:
        try:
            inputs[image_id] = load(image_id)
        except Exception as error:  # noqa: BLE001 - recorded per image by run_batch below
            errors[image_id] = error
    outputs = _compute_block(list(inputs), inputs, compute, errors)

    def step(image_id: str) -> None:
        if image_id in errors:
            raise errors[image_id]
        write(image_id, outputs[image_id])

    return run_batch_in_task(workspace, stage, key, image_ids, step)


def _compute_block(
    ids: list[str], inputs: dict[str, In], compute: Callable[[list[In]], list[Out]], errors: dict[str, Exception]
) -> dict[str, Out]:
    if not ids:
        return {}
    try:
        return dict(zip(ids, compute([inputs[i] for i in ids]), strict=True))
    except Exception as error:  # noqa: BLE001 - retried one image at a time
        if len(ids) == 1:
            errors[ids[0]] = error
            return {}
    outputs = {}
    for image_id in ids:
        try:
            outputs[image_id] = compute([inputs[image_id]])[0]
        except Exception as error:  # noqa: BLE001
            errors[image_id] = error
    return outputs


_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextmanager
def torch_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """torch.set_num_threads(threads) while any CPU task of this process holds it.

    The setting from before the first holder comes back when the last one ends (torch's
    thread count is process-wide). None or a GPU device: leave torch's setting alone.
    """
    global _threads_users, _threads_before
    if device.type != "cpu" or not threads:
        yield
        return
    import torch

    with _threads_lock:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)


def single_torch_thread(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """One torch thread while a batch task runs on the CPU.

    Measured on the 2-core machine: the small sparse GCN ops run ~10x slower with 2
    threads.
    """
    return torch_threads(1, device)


def resolve_device(device: str | None) -> torch.device:
    import torch

    from wsss_core.backbones import default_device

    return torch.device(device) if device else default_device()
