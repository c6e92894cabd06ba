"""What every flow shares: how batches run (engines), stage keys, batch fan-out with progress.

Flow bodies only reference importable functions: prefect-dask pickles the running
flow (its function by value, with the globals it names) into every task it sends to a
worker, so an object such as the console must never be named in a flow body.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from prefect import Task
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from wsss_core.backbones import default_device
from wsss_core.config import config_hash, config_to_dict
from wsss_core.errors import WorkspaceError
from wsss_core.registries import ENGINES
from wsss_core.runner import BatchReport, split_batches
from wsss_core.store import Workspace, owning_stage

console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line

DEFAULT_BATCH_SIZE = 16

# The Prefect tag of tasks that use a GPU: `prefect concurrency-limit create gpu 1` keeps them
# one at a time. Trainings carry it always (tasks/); a batch stage only when it runs on a GPU
# (batch_task): Prefect asks the server for the tag's concurrency slots before every task run
# it tags, measured at 200-300 ms per run here, more than many batches compute.
GPU_TAG = "gpu"


@dataclass(frozen=True)
class Execution:
    """How a flow runs its batches, never what it computes (not part of any stage key).

    engine: threads or processes on this machine, or dask (a LocalCluster, or the
    scheduler at dask_address). workers: default the number of CPU cores.
    """

    engine: str = "threads"
    workers: int | None = None
    dask_address: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    progress: bool = True

    def __post_init__(self) -> None:
        ENGINES.check(self.engine)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")


def local_cluster_kwargs(workers: int) -> dict[str, Any]:
    """Keyword arguments for the Dask LocalCluster the dask engine starts when given no address.

    Every listener stays on the loopback interface. `host` covers the scheduler's and the
    workers' comms (and the workers' HTTP servers, which follow it). The scheduler's HTTP
    server (dashboard, health, metrics; it runs even without bokeh) does not: distributed
    binds its default ":8787", or any ":PORT", to every interface whatever `host` says, so the
    address is spelled out. Port 0 takes a free port: two runs (or two people) on one
    machine would otherwise share 8787.
    """
    return {"n_workers": workers, "threads_per_worker": 1, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}


def make_task_runner(execution: Execution) -> TaskRunner:
    workers = execution.workers or os.cpu_count() or 1
    if execution.engine == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if execution.engine == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if execution.dask_address:
        return DaskTaskRunner(address=execution.dask_address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(workers))


_session: contextvars.ContextVar[tuple[tuple, TaskRunner] | None] = contextvars.ContextVar("wsss_engine", default=None)


@contextmanager
def engine_session(execution: Execution) -> Iterator[TaskRunner]:
    """A started task runner for the engine; nested sessions of the same engine share it
    (so `wsss run`'s paths use one Dask cluster, not one each)."""
    identity = (execution.engine, execution.workers, execution.dask_address)
    active = _session.get()
    if active is not None and active[0] == identity:
        yield active[1]
        return
    with make_task_runner(execution) as runner:
        token = _session.set((identity, runner))
        try:
            yield runner
        finally:
            _session.reset(token)


def stage_key(workspace: Workspace, stage: str, config: Any, upstream: list[str] | tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """A stage's key (its config's hash chained with its inputs' keys) and those inputs' keys.

    upstream: the stages and ingested arrays it reads ("images", "scribbles": the ingest stage's
    key, once). A stage whose input stage never ran is refused with a message saying what to run first.
    """
    upstream_keys = {}
    for name in upstream:
        owner = owning_stage(name)
        if owner in upstream_keys:
            continue
        key = workspace.stage_key(owner)
        if key is None:
            raise WorkspaceError(f"{workspace.path}: stage {stage!r} needs {owner!r}, which has not run yet")
        upstream_keys[owner] = key
    return config_hash(config, *upstream_keys.values()), upstream_keys


def prepare_stage(
    workspace: Workspace, stage: str, config: Any, upstream: list[str] | tuple[str, ...], keep_key: bool = False
) -> str:
    """Record a stage's config and return its key (see stage_key).

    keep_key: refuse a key other than the recorded one (a retry must not recompute a
    stage under new settings for a few images: a new key drops every image's marker).
    """
    key, upstream_keys = stage_key(workspace, stage, config, upstream)
    recorded = workspace.stage_key(stage)
    if keep_key and recorded is not None and recorded != key:
        raise WorkspaceError(
            f"{workspace.path}: stage {stage!r} has other settings or inputs than when it last ran "
            f"(key {recorded} -> {key}); a retry re-runs images only with the recorded settings: "
            "re-run the command itself to recompute the stage"
        )
    workspace.begin_stage(stage, key, config_to_dict(config), upstream_keys, reads=list(upstream))
    return key


@dataclass
class DatasetChanges:
    """What an ingest found since the last one: images whose sources changed, new images,
    images that left the dataset (no list names them, or they no longer read), unchanged ones."""

    changed: int = 0
    new: int = 0
    removed: int = 0
    unchanged: int = 0


@dataclass
class StageSummary:
    """What one run of a stage did; flows return it and the CLI prints it."""

    stage: str
    key: str
    total: int
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    note: str = ""
    refitted: bool = False  # a dataset-level model was fitted (again): every later stage changes
    changes: DatasetChanges | None = None  # ingest: what changed in the dataset since the last ingest

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        if self.changes is not None:
            c = self.changes
            line = (
                f"{self.stage}: {self.total} images, {c.changed} changed, {c.new} new, {c.removed} removed, "
                f"{c.unchanged} unchanged ({self.done} computed, {len(self.failed)} failed)"
            )
        else:
            line = (
                f"{self.stage}: {self.total} images, {self.done} computed, {self.skipped} already done, "
                f"{len(self.failed)} failed"
            )
        return f"{line} ({self.note})" if self.note else line


def runs_on_gpu(device: str | None, execution: Execution) -> bool:
    """Whether a batch stage's tasks will run on a GPU.

    device: the stage's device (None: CUDA when the machine running the task has it). On a
    Dask scheduler given by address the workers' machines decide, so the answer is yes.
    """
    if device:
        return torch.device(device).type != "cpu"
    if execution.engine == "dask" and execution.dask_address:
        return True
    return default_device().type != "cpu"


def batch_task(task: Task, parameters: dict[str, Any], execution: Execution) -> Task:
    """The task to submit for a batch stage: tagged `gpu` when the stage runs on a GPU.

    A stage uses a device when its parameters name one (its row's runtime `device`)."""
    if "device" in parameters and runs_on_gpu(parameters["device"], execution) and GPU_TAG not in task.tags:
        return task.with_options(tags={*task.tags, GPU_TAG})
    return task


def run_stage_batches(
    runner: TaskRunner,
    task: Task,
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    parameters: dict[str, Any],
    execution: Execution,
    redo: Collection[str] = (),
) -> StageSummary:
    """Submit one task per batch of not-yet-done images (and of `redo`: done, but to compute
    again) and wait for all of them.

    The task is called as task(workspace, stage, key, image_ids, **parameters). A batch
    whose task fails outright (after its retries) gets a failure record for each of its
    images that is not done, so nothing is silently lost.
    """
    pending = [i for i in image_ids if i in redo or not workspace.is_done(stage, i, key)]
    summary = StageSummary(stage, key, total=len(image_ids), skipped=len(image_ids) - len(pending))
    batches = split_batches(pending, execution.batch_size) if pending else []
    task = batch_task(task, parameters, execution)
    redo = set(redo)

    def redone(batch: list[str]) -> dict[str, Any]:  # the task's own images to redo, when there are any
        return {"redo": [i for i in batch if i in redo]} if redo else {}

    futures = {
        runner.submit(
            task, {"workspace": workspace, "stage": stage, "key": key, "image_ids": batch, **parameters, **redone(batch)}
        ): batch
        for batch in batches
    }
    report = BatchReport(stage)
    with stage_progress(stage, len(pending), execution.progress) as advance:
        for future in as_completed(list(futures)):
            batch = futures[future]
            result = future.result(raise_on_failure=False)
            if isinstance(result, BatchReport):
                report.merge(result)
            else:
                message = f"batch task failed: {result!r}"
                for image_id in batch:
                    if not workspace.is_done(stage, image_id, key):
                        workspace.record_failure(stage, image_id, "batch-failed", message, key)
                        report.failed[image_id] = message
            advance(len(batch))
    summary.done = len(report.done)
    summary.skipped += len(report.skipped)
    summary.failed = report.failed
    return summary


@contextmanager
def stage_progress(stage: str, total: int, show: bool) -> Iterator[Any]:
    """A progress bar for one stage; yields advance(n)."""
    with Progress(
        TextColumn(f"[bold]{stage}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
        transient=False,
    ) as bar:
        progress_task = bar.add_task(stage, total=total)
        yield lambda n: bar.advance(progress_task, n)


def announce(message: str, warning: bool = False) -> None:
    """One line on the console (flow bodies call this instead of naming the console)."""
    console.print(f"[bold red]WARNING:[/bold red] {message}" if warning else message)



def failed_images(summaries: list[StageSummary]) -> dict[str, int]:
    """Images that failed in this run, counted per stage (stages without failures left out)."""
    return {s.stage: len(s.failed) for s in summaries if s.failed}


def failure_message(summaries: list[StageSummary], workspace: str | Workspace) -> str:
    counts = failed_images(summaries)
    images = len({image_id for s in summaries for image_id in s.failed})
    where = ", ".join(f"{stage} {count}" for stage, count in counts.items())
    return (
        f"{images} image(s) failed ({where}); see `wsss status --workspace {workspace}`, "
        f"then `wsss retry-failed --workspace {workspace}` re-runs just them"
    )


class ImagesFailedError(RuntimeError):
    """A flow finished but some images failed; `result` is what it did (summaries included).

    Calling a flow as a Python function raises this; flow_result() returns its result.
    """

    def __init__(self, message: str, result: Any):
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple:  # picklable with its result (states travel between processes)
        return (type(self), (str(self), self.result))


def outcome(result: Any, summaries: list[StageSummary], workspace: str | Workspace) -> Any:
    """What a flow returns: its result, or a Failed state carrying it when images failed.

    Failed, not Completed, so the Prefect UI, automations and `prefect flow-run retry`
    see the failures; a retry (or `wsss retry-failed`) redoes only the images not done.
    """
    if not failed_images(summaries):
        return result
    from prefect.states import Failed

    message = failure_message(summaries, workspace)
    return Failed(message=message, data=ImagesFailedError(message, result))


def flow_result(flow: Any, **parameters: Any) -> Any:
    """Run a flow (or a subflow) and return its result, also when it ended Failed for failed images.

    Any other exception the flow raised is raised again here.
    """
    try:
        return flow(**parameters)
    except ImagesFailedError as failed:
        return failed.result
