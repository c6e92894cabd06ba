"""Fan a stage out over batches of images, with a progress display, and gather the outcome."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from prefect import Task
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from wsss_core.config import config_hash, config_to_dict
from wsss_core.errors import WorkspaceError
from wsss_core.runner import BatchReport, split_batches
from wsss_core.store import INGEST_STAGE, Workspace

console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line

DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class EngineConfig:
    """Where batch tasks run: threads or processes on this machine, or a Dask cluster."""

    engine: Literal["threads", "processes", "dask"] = "threads"
    workers: int | None = None  # default: the number of CPU cores
    dask_address: str | None = None  # an existing scheduler; None starts a LocalCluster


def local_cluster_kwargs(workers: int) -> dict[str, Any]:
    """Keyword arguments for the Dask LocalCluster the dask engine starts when given no address.

    Every listener stays on the loopback interface. `host` covers the scheduler's and the
    workers' comms (and the workers' HTTP servers, which follow it). The scheduler's HTTP
    server (dashboard, health, metrics; it runs even without bokeh) does not: distributed
    binds its default ":8787", or any ":PORT", to 0.0.0.0 whatever `host` says, so the
    address is spelled out. Port 0 takes a free port: two runs (or two people) on one
    machine would otherwise share 8787.
    """
    return {
        "n_workers": workers,
        "threads_per_worker": 1,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }


def make_task_runner(engine: EngineConfig) -> TaskRunner:
    workers = engine.workers or os.cpu_count() or 1
    if engine.engine == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if engine.engine == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    if engine.engine == "dask":
        from prefect_dask import DaskTaskRunner

        if engine.dask_address:
            return DaskTaskRunner(address=engine.dask_address)
        return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(workers))
    raise ValueError(f"unknown engine {engine.engine!r} (threads, processes or dask)")


def prepare_stage(workspace: Workspace, stage: str, config: Any, upstream: list[str]) -> str:
    """Record a stage's config and return its key: the config's hash chained with its inputs' keys.

    A stage whose input stage never ran is refused with a message saying what to run first.
    """
    upstream_keys = {}
    for name in upstream:
        key = workspace.stage_key(name)
        if key is None:
            raise WorkspaceError(f"{workspace.path}: stage {stage!r} needs {name!r}, which has not run yet")
        upstream_keys[name] = key
    key = config_hash(config, *upstream_keys.values())
    workspace.begin_stage(stage, key, config_to_dict(config), upstream_keys)
    return key


@dataclass
class StageSummary:
    """What one run of a stage did; flows return it and the CLI prints it."""

    stage: str
    key: str
    total: int
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return (
            f"{self.stage}: {self.total} images, {self.done} computed, {self.skipped} already done, "
            f"{len(self.failed)} failed"
        )


def run_stage_batches(
    task: Task,
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    **task_kwargs: Any,
) -> StageSummary:
    """Submit one task per batch of not-yet-done images and wait for all of them.

    A batch whose task fails outright (after its retries) gets a failure record for
    each of its images that is not done, so nothing is silently lost.
    """
    pending = [i for i in image_ids if not workspace.is_done(stage, i, key)]
    summary = StageSummary(stage, key, total=len(image_ids), skipped=len(image_ids) - len(pending))
    batches = split_batches(pending, batch_size) if pending else []
    futures = {
        task.submit(workspace=workspace, key=key, image_ids=batch, **task_kwargs): batch for batch in batches
    }
    report = BatchReport(stage)
    with Progress(
        TextColumn(f"[bold]{stage}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=False,
    ) as bar:
        progress_task = bar.add_task(stage, total=len(pending))
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
            bar.advance(progress_task, len(batch))
    summary.done = len(report.done)
    summary.skipped += len(report.skipped)
    summary.failed = report.failed
    return summary


def eligible_ids(ws: Workspace, upstream: list[str]) -> list[str]:
    """Ingested images that every input stage has finished under its current key."""
    done = [ws.done_ids(stage) for stage in upstream if stage != INGEST_STAGE]
    return [i for i in ws.image_ids() if all(i in d for d in done)]


def run_stage(
    ws: Workspace,
    task: Task,
    stage: str,
    key_config: Any,
    upstream: list[str],
    *,
    batch_size: int,
    progress: bool,
    **task_kwargs: Any,
) -> StageSummary:
    """Record the stage's config (key chained with upstream keys) and run its batches."""
    key = prepare_stage(ws, stage, key_config, upstream)
    ids = eligible_ids(ws, upstream)
    return run_stage_batches(task, ws, stage, key, ids, batch_size=batch_size, progress=progress, **task_kwargs)


def check_choice(value: str | None, choices: tuple[str, ...], what: str) -> None:
    """ValueError unless value is one of choices (None passes: "not given")."""
    if value is not None and value not in choices:
        raise ValueError(f"unknown {what} {value!r} (choose {', '.join(choices)})")

