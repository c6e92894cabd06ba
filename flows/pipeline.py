"""Pipelines as data: each path is a table of stages, and one runner walks any table.

A row (Stage) names what the stage writes, the Prefect task that computes it, the
stages it reads, and the task's parameters. The runner chains keys (a stage's key
hashes its parameters with its inputs' keys, so a change recomputes that stage and
every stage after it, nothing before), runs only the images that are not done, stops
after `until`, records failures and returns one summary per row. `status`, the whole
pipeline (`wsss run`) and later stages read the same tables: a new stage is a row plus
its task.

Task contract: task(workspace, stage, key, image_ids, **params, **runtime).
  per-image stages return a BatchReport over their batch (wsss_core.runner.run_batch);
  dataset-level stages (trainings) get every eligible image at once and return a DatasetReport.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect import Task
from prefect.task_runners import TaskRunner

from flows.common import (
    Execution,
    StageSummary,
    announce,
    engine_session,
    prepare_stage,
    run_stage_batches,
)
from wsss_core.config import ids_digest
from wsss_core.errors import UsageError
from wsss_core.runner import DatasetReport
from wsss_core.store import INGEST_STAGE, Workspace


@dataclass(frozen=True)
class Stage:
    """One row of a pipeline table.

    params: the task's arguments that decide its output (hashed into the key).
    runtime: arguments that do not (device, threads).
    step: the name `--until` stops after (rows may share one; default: the stage name).
    dataset_level: one task over every eligible image (a training); its key also hashes
    the ids of those images, so a changed image set retrains.
    masks: writes class masks (pseudo/<method>), which are evaluated and exportable.
    """

    name: str
    task: Task
    reads: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    runtime: Mapping[str, Any] = field(default_factory=dict)
    step: str = ""
    dataset_level: bool = False
    masks: bool = False

    @property
    def until_step(self) -> str:
        return self.step or self.name


@dataclass(frozen=True)
class Pipeline:
    """A named, ordered table of stages."""

    name: str
    stages: tuple[Stage, ...]

    def steps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(stage.until_step for stage in self.stages))

    def check_until(self, until: str | None) -> None:
        if until is not None and until not in self.steps():
            raise UsageError(f"{self.name}: no step {until!r} (steps: {', '.join(self.steps())})")

    def gates(self, stage: Stage) -> tuple[str, ...]:
        """The inputs whose finished images a stage runs on: every read but dataset-level stages
        (a model trained on some images still serves every image)."""
        dataset_level = {s.name for s in self.stages if s.dataset_level}
        return tuple(read for read in stage.reads if read not in dataset_level)


@dataclass
class PipelineRun:
    """What one run of a pipeline did: a summary per stage, its mask stages, its evaluation."""

    pipeline: str
    summaries: list[StageSummary] = field(default_factory=list)
    mask_stages: list[str] = field(default_factory=list)
    evaluation: dict[str, dict] | None = None
    trainings: dict[str, DatasetReport] = field(default_factory=dict)  # what each dataset-level stage did
    notes: dict[str, Any] = field(default_factory=dict)  # preset chosen, weights used, ...

    @property
    def ok(self) -> bool:
        return all(summary.ok for summary in self.summaries)


def run_pipeline(
    ws: Workspace,
    pipeline: Pipeline,
    execution: Execution,
    image_ids: list[str],
    until: str | None = None,
    run: PipelineRun | None = None,
) -> PipelineRun:
    """Run every row of the table in order over image_ids, stopping after step `until`."""
    pipeline.check_until(until)
    run = run or PipelineRun(pipeline.name)
    with engine_session(execution) as runner:
        for index, stage in enumerate(pipeline.stages):
            run.summaries.append(run_stage(ws, pipeline, stage, image_ids, runner, execution, run))
            if stage.masks:
                run.mask_stages.append(stage.name)
            following = pipeline.stages[index + 1] if index + 1 < len(pipeline.stages) else None
            if until == stage.until_step and (following is None or following.until_step != until):
                break
    return run


def run_stage(
    ws: Workspace,
    pipeline: Pipeline,
    stage: Stage,
    image_ids: list[str],
    runner: TaskRunner,
    execution: Execution,
    run: PipelineRun,
) -> StageSummary:
    ids = finished_by(ws, pipeline.gates(stage), image_ids)
    if stage.dataset_level:
        return run_dataset_stage(ws, stage, ids, runner, run)
    key = prepare_stage(ws, stage.name, dict(stage.params), stage.reads)
    return run_stage_batches(
        runner, stage.task, ws, stage.name, key, ids, {**stage.params, **stage.runtime}, execution
    )


def finished_by(ws: Workspace, upstream: tuple[str, ...], image_ids: list[str]) -> list[str]:
    """The images that every input stage finished under its current key."""
    done = [ws.done_ids(stage) for stage in upstream if stage != INGEST_STAGE]
    return [i for i in image_ids if all(i in d for d in done)]


def run_dataset_stage(ws: Workspace, stage: Stage, ids: list[str], runner: TaskRunner, run: PipelineRun) -> StageSummary:
    """One task over every eligible image; skipped when all of them are done under the key.

    The images it learned from are marked done here, after the task returned: a crash
    mid-training leaves them pending (the training's checkpoint resumes it).
    """
    key = prepare_stage(ws, stage.name, {**stage.params, "images": ids_digest(ids)}, stage.reads)
    summary = StageSummary(stage.name, key, total=len(ids))
    done = ws.done_ids(stage.name, key)
    if ids and all(i in done for i in ids):
        summary.skipped = len(ids)
        return summary
    if not ids:
        summary.note = "no images to learn from"
        return summary
    parameters = {"workspace": ws, "stage": stage.name, "key": key, "image_ids": ids, **stage.params, **stage.runtime}
    report = runner.submit(stage.task, parameters).result()
    if not isinstance(report, DatasetReport):
        raise TypeError(f"{stage.name}: task returned {type(report).__name__}, not a DatasetReport")
    run.trainings[stage.name] = report
    for image_id in report.images:
        ws.mark_done(stage.name, image_id, key)
        ws.clear_failure(stage.name, image_id)
    summary.failed = dict(report.failed)
    if report.trained:
        summary.done = len(report.images)
        verb = f"resumed from epoch {report.resumed_from_epoch}, trained" if report.resumed_from_epoch else "trained"
    else:
        summary.skipped = len(report.images)
        verb = "finished result found, not redone"
    last = report.history[-1] if report.history else {}
    shown = ", ".join(f"{name} {value:.4f}" for name, value in last.items())
    announce(f"{stage.name}: {verb} on {len(report.images)} images -> {report.artifact} {shown}".rstrip())
    return summary
