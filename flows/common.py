"""What every flow shares: how batches run (engines), the console, what a flow returns when
images failed. The runner that walks a stage table is flows/pipeline.py.

Flow bodies only reference importable functions: prefect-dask pickles the running
flow (its function by value, with the globals it names) into every task it sends to a
worker, so an object such as the console must never be named in a flow body.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from rich.console import Console

from wsss_core.registries import ENGINES
from wsss_core.store import Workspace

console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line

DEFAULT_BATCH_SIZE = 16

DASK_ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"  # Dask's own setting of its scheduler's address


@dataclass(frozen=True)
class Execution:
    """How a flow runs its batches, never what it computes (not part of any stage key).

    engine: threads or processes on this machine, or dask (a LocalCluster, or the
    scheduler at dask_address); None: as the environment says (effective_execution).
    workers: default the number of CPU cores.
    """

    engine: str | None = None
    workers: int | None = None
    dask_address: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine is not None:
            ENGINES.check(self.engine)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")


def effective_execution(execution: Execution) -> Execution:
    """What the request leaves open, filled in from the environment where the batches start:
    DASK_SCHEDULER_ADDRESS (set by `wsss stack up`, or a cluster's own environment) makes an
    unnamed engine dask on that scheduler, and is the scheduler of a dask engine given no
    address; else threads. An engine or address the request names wins."""
    address = execution.dask_address
    if address is None and execution.engine in (None, "dask"):
        address = os.environ.get(DASK_ADDRESS_VARIABLE) or None
    engine = execution.engine or ("dask" if address else "threads")
    return replace(execution, engine=engine, dask_address=address if engine == "dask" else None)


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
    execution = effective_execution(execution)
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
    execution = effective_execution(execution)
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
