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

The whole runner is here: the tables, each stage's key (stage_key, prepare_stage) and its
batches fanned out to tasks (run_stage_batches). Below it, each at its own layer: a batch
inside its Prefect task (tasks/common.py: retries, torch threads) and the per-image loop
(wsss_core/runner.py: skip what is done, record what fails), which needs no Prefect.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import Task
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from flows.common import Execution, StageSummary, announce, console, effective_execution, engine_session
from wsss_core.config import config_hash, config_to_dict, ids_digest
from wsss_core.errors import UsageError, WorkspaceError
from wsss_core.refit import RefitRule, model_drift
from wsss_core.runner import BatchReport, DatasetReport, split_batches
from wsss_core.store import INGEST_STAGE, PER_IMAGE_LABELS, Workspace, owning_stage


@dataclass(frozen=True)
class Stage:
    """One row of a pipeline table.

    params: the task's arguments that decide its output (hashed into the key).
    runtime: arguments that do not (device, threads).
    step: the name `--until` stops after (rows may share one; default: the stage name).
    dataset_level: one task over every eligible image (a training); images that join after
    it ran are served or refitted by its refit rule (wsss_core.refit).
    masks: writes class masks (pseudo/<method>), which are evaluated and exportable.
    splits: only the run's images of these splits (a segmentation training: the train split).
    optional_reads: reads it uses where an image has them, without waiting for them (their
    keys still chain into this stage's key).
    """

    name: str
    task: Task
    reads: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    runtime: Mapping[str, Any] = field(default_factory=dict)
    step: str = ""
    dataset_level: bool = False
    masks: bool = False
    refit: RefitRule | None = None  # a dataset-level row's own late-image rule (default: the run's)
    splits: tuple[str, ...] | None = None
    optional_reads: tuple[str, ...] = ()

    @property
    def until_step(self) -> str:
        return self.step or self.name


@dataclass(frozen=True)
class Pipeline:
    """A named, ordered table of stages.

    final_masks: the masks the path hands on to segmentation rounds (the papers': GraphNet's
    GCN masks, PSA's walked masks, each after the CRF when the request made them).
    inputs: the stages made outside this table that its rows read (the pseudo masks a
    segmentation round trains on). Every other read must be made by an earlier row or by
    ingest: a table wired wrong is refused when it is built.
    """

    name: str
    stages: tuple[Stage, ...]
    final_masks: str | None = None
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        made = {INGEST_STAGE, *self.inputs}
        for stage in self.stages:
            for read in stage.reads:
                if owning_stage(read) not in made:
                    raise ValueError(f"pipeline {self.name}: row {stage.name!r} reads {read!r}, which no earlier row makes")
            made.add(stage.name)

    def steps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(stage.until_step for stage in self.stages))

    def check_until(self, until: str | None) -> None:
        if until is not None and until not in self.steps():
            raise UsageError(f"{self.name}: no step {until!r} (steps: {', '.join(self.steps())})")

    def label_needs(self, stage: Stage) -> tuple[str, ...]:
        """The per-image weak labels (PER_IMAGE_LABELS) a row needs, itself or through the rows it
        reads: seeds/scribbles and every row after it need scribbles. Its images are those that
        carry them; optional reads need nothing."""
        rows = {row.name: row for row in self.stages}
        needs: set[str] = set()
        frontier = [read for read in stage.reads if read not in stage.optional_reads]
        seen: set[str] = set()
        while frontier:
            read = frontier.pop()
            if read in seen:
                continue
            seen.add(read)
            if read in PER_IMAGE_LABELS:
                needs.add(read)
            elif read in rows:
                frontier += [r for r in rows[read].reads if r not in rows[read].optional_reads]
        return tuple(sorted(needs))

    def gates(self, stage: Stage) -> tuple[str, ...]:
        """The inputs whose finished images a stage runs on: every read but dataset-level stages
        (a model trained on some images still serves every image) and optional reads."""
        dataset_level = {s.name for s in self.stages if s.dataset_level}
        return tuple(read for read in stage.reads if read not in dataset_level and read not in stage.optional_reads)


@dataclass
class PipelineRun:
    """What one run of a pipeline did: a summary per stage, its mask stages, its evaluation."""

    pipeline: str
    summaries: list[StageSummary] = field(default_factory=list)
    mask_stages: list[str] = field(default_factory=list)
    evaluation: dict[str, dict] | None = None
    trainings: dict[str, DatasetReport] = field(default_factory=dict)  # what each dataset-level stage did
    final_masks: str | None = None  # Pipeline.final_masks
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
    only: Collection[str] | None = None,
    refit: RefitRule = RefitRule(),
) -> PipelineRun:
    """Run every row of the table in order over image_ids, stopping after step `until`.

    only: a retry's images. Per-image stages run just those (and refuse a stage whose
    settings changed since it ran); dataset-level stages still see every image of
    image_ids. When a dataset-level model is fitted again (see wsss_core.refit), every
    image's later stages change, so the rest of the table runs on every image.
    """
    pipeline.check_until(until)
    run = run or PipelineRun(pipeline.name)
    run.final_masks = pipeline.final_masks
    only = set(only) if only is not None else None
    with engine_session(execution) as runner:
        for index, stage in enumerate(pipeline.stages):
            started = time.perf_counter()
            needs = pipeline.label_needs(stage)
            ids = ws.carrying(needs, finished_by(ws, pipeline.gates(stage), in_splits(ws, stage.splits, image_ids)))
            if stage.dataset_level:
                # One run of this workspace at a time decides, fits and marks: a second waits here, then finds it done.
                with ws.stage_lock(stage.name, on_wait=announce):
                    summary = run_dataset_stage(ws, stage, ids, runner, run, stage.refit or refit, only)
                if only is not None and summary.refitted:
                    announce(f"{stage.name}: fitted again, so every image's later stages are recomputed")
                    only = None
            else:
                if only is not None:
                    ids = [i for i in ids if i in only]
                key = prepare_stage(ws, stage.name, dict(stage.params), stage.reads, keep_key=only is not None)
                summary = run_stage_batches(
                    runner, stage.task, ws, stage.name, key, ids, {**stage.params, **stage.runtime}, execution
                )
            if needs and ws.stage_meta(stage.name) is not None:  # status counts only the images that carry them
                ws.note_stage(stage.name, labels=list(needs))
            record_wall_time(ws, stage.name, time.perf_counter() - started)
            run.summaries.append(summary)
            if stage.masks:
                run.mask_stages.append(stage.name)
            following = pipeline.stages[index + 1] if index + 1 < len(pipeline.stages) else None
            if until == stage.until_step and (following is None or following.until_step != until):
                break
    return run


def record_wall_time(ws: Workspace, stage: str, seconds: float) -> None:
    """The stage's wall time in this run, in its record (`wsss report` shows it); a stage that
    never began (nothing to do) has no record to add it to."""
    if ws.stage_meta(stage) is not None:
        ws.note_stage(stage, wall_s=round(seconds, 3), finished=time.time())


def in_splits(ws: Workspace, splits: tuple[str, ...] | None, image_ids: list[str]) -> list[str]:
    """The images of image_ids that are in any of the splits (None: all of them)."""
    if splits is None:
        return image_ids
    members = set(ws.select_ids(list(splits)))
    return [i for i in image_ids if i in members]


def finished_by(ws: Workspace, upstream: tuple[str, ...], image_ids: list[str]) -> list[str]:
    """The images that every input stage finished under its current key."""
    done = [ws.done_ids(stage) for stage in upstream if owning_stage(stage) != INGEST_STAGE]
    return [i for i in image_ids if all(i in d for d in done)]


FIT_FIELDS = ("images", "fitted_on", "refit_of")


def fit_config(stage: Stage, ids: list[str], refit_of: str | None = None) -> dict[str, Any]:
    """What a dataset-level stage's key hashes: its parameters and the images it is fitted on.

    refit_of: the key of the model this fit replaces; a refit can see the same ids as the
    fit before it (an image it refused, now fixed) and must not find that fit's result.
    """
    config = {**stage.params, "images": ids_digest(ids), "fitted_on": len(ids)}
    return {**config, "refit_of": refit_of} if refit_of else config


def finished_fit(ws: Workspace, stage: Stage) -> tuple[str, int] | None:
    """(key, images fitted on) of the stage's finished model when its parameters and inputs are
    unchanged since it was fitted; None when it must be fitted (first run, changed, unfinished)."""
    meta = ws.stage_meta(stage.name)
    recorded = (meta or {}).get("config", {})
    if "images" not in recorded or "fitted_on" not in recorded:
        return None  # never fitted, or fitted before the late-image rule: fit by the current rule
    key, _ = stage_key(ws, stage.name, {**stage.params, **{k: recorded[k] for k in FIT_FIELDS if k in recorded}}, stage.reads)
    if key != meta["key"] or not ws.done_ids(stage.name, key):
        return None
    return key, int(meta.get("fitted_on", recorded["fitted_on"]))  # the images it kept, once it ran


def run_dataset_stage(
    ws: Workspace,
    stage: Stage,
    ids: list[str],
    runner: TaskRunner,
    run: PipelineRun,
    refit: RefitRule = RefitRule(),
    only: Collection[str] | None = None,
) -> StageSummary:
    """One task over every eligible image: it fits the model, or finds it fitted and serves the
    images that joined late (wsss_core.refit says which, and when to fit again).

    While the model is kept, the task is called under its recorded key: a training finds its
    finished checkpoint and only checks the late images; the shared GCN fits a model for them
    (see tasks.graphnet.gcn_fit). Images the task refused before are not counted as late
    unless a retry (only) asks for them. The images are marked done here, after the task
    returned: a crash mid-training leaves them pending (the training's checkpoint resumes it).
    run_pipeline calls it holding the stage's workspace lock (wsss_core/store/locks.py), so two
    runs of one workspace never fit one model at once, and the second reuses the first's.
    """
    recorded = ws.stage_key(stage.name)
    fitted = finished_fit(ws, stage)
    refit_of = None
    if fitted is not None:
        key, fitted_on = fitted
        done = ws.done_ids(stage.name, key)
        refused = {r.image_id for r in ws.failures(stage.name) if r.key == key} - done
        late = [i for i in ids if i not in done and (i not in refused or (only is not None and i in only))]
        pending = [i for i in ids if i not in done]
        drift = model_drift(ws, stage.name, key, fitted_on, done, late)
        if not pending and not drift.removed:
            return StageSummary(stage.name, key, total=len(ids), skipped=len(ids))
        if refit.needs_refit(fitted_on, drift.total):
            announce(
                f"{stage.name}: {drift.describe()} since the model was fitted on {fitted_on} images (more than "
                f"{refit.late_fraction:.0%}, the refit rule): fitting it again on all {len(ids)}"
            )
            fitted = None
            refit_of = key
        elif not pending:  # only removed images: the kept model still serves every image
            announce(f"{stage.name}: {drift.describe()} since the model was fitted on {fitted_on} images "
                     f"(within {refit.late_fraction:.0%}, the refit rule): model kept")
            return StageSummary(stage.name, key, total=len(ids), skipped=len(ids))
    if fitted is None:
        key = prepare_stage(ws, stage.name, fit_config(stage, ids, refit_of), stage.reads)
    summary = StageSummary(stage.name, key, total=len(ids), refitted=key != recorded)
    if not ids:
        summary.note = "no images to learn from"
        return summary
    parameters = {"workspace": ws, "stage": stage.name, "key": key, "image_ids": ids, **stage.params, **stage.runtime}
    report = runner.submit(stage.task, parameters).result()
    if not isinstance(report, DatasetReport):
        raise TypeError(f"{stage.name}: task returned {type(report).__name__}, not a DatasetReport")
    run.trainings[stage.name] = report
    if fitted is None:
        ws.note_stage(stage.name, fitted_on=len(report.images))  # not the images it refused
        ws.record_fit(stage.name, key, report.images)
    done = ws.done_ids(stage.name, key)
    new = [i for i in report.images if i not in done]
    for image_id in new:
        ws.mark_done(stage.name, image_id, key, report.served_by.get(image_id))
        ws.clear_failure(stage.name, image_id)
    summary.failed = dict(report.failed)
    summary.done, summary.skipped = len(new), len(report.images) - len(new)
    if fitted is not None:
        if new:
            summary.note = (f"{drift.describe()} since the fit (refit rule: within {refit.late_fraction:.0%}): "
                            f"{report.late_note or f'served by the model fitted on {fitted[1]} images'}")
        verb = "kept"
    elif report.trained:
        verb = f"resumed from epoch {report.resumed_from_epoch}, trained" if report.resumed_from_epoch else "trained"
    else:
        verb = "finished result found, not redone"
    last = report.history[-1] if report.history and report.trained else {}
    shown = ", ".join(f"{name} {value:.4f}" for name, value in last.items())
    announce(f"{stage.name}: {verb} on {len(report.images)} images -> {report.artifact} {shown}".rstrip()
             + (f" ({summary.note})" if summary.note else ""))
    return summary


# ----------------------------------------------------------------------------- one stage: its key, its batches


# The Prefect tag of tasks that use a GPU: `prefect concurrency-limit create gpu 1` keeps them
# one at a time. Trainings carry it always (tasks/); a batch stage only when it runs on a GPU
# (batch_task): Prefect asks the server for the tag's concurrency slots before every task run
# it tags, measured at 200-300 ms per run here, more than many batches compute.
GPU_TAG = "gpu"


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


def runs_on_gpu(device: str | None, execution: Execution) -> bool:
    """Whether a batch stage's tasks will run on a GPU.

    device: the stage's device (None: CUDA when the machine running the task has it). On a
    Dask scheduler given by address the workers' machines decide, so the answer is yes.
    """
    import torch  # here: a run whose stages use no device (superpixels) never loads torch

    from wsss_core.backbones import default_device

    if device:
        return torch.device(device).type != "cpu"
    execution = effective_execution(execution)
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
