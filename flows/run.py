"""Flow: the whole pipeline in one run, a subflow per path, one evaluation table.

    [ingest] -> every path the weak labels allow (graphnet-scribbles, graphnet-boxes,
    affinitynet, graphnet-tags) -> segmentation rounds on each supervision's best pseudo masks
    (wsss_core.registries.BEST_MASKS; segmentation.paths: on those paths' final masks instead)
    -> evaluation of every pseudo-mask set and round together -> the HTML report

Driven by a run config (wsss_core.run_config: a YAML file and/or settings by name); a
deployment passes the same file or settings, so a scheduled run is exactly this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from prefect import flow

from flows.affinitynet import affinitynet_flow
from flows.common import Execution, StageSummary, announce, flow_result, outcome
from flows.evaluate import evaluate_flow, has_ground_truth
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from flows.pipeline import PipelineRun
from flows.segment import segment_flow
from flows.tracking import flow_run_tracking
from wsss_core.config import config_to_dict
from wsss_core.data.image_io import ReadOptions
from wsss_core.errors import WsssError
from wsss_core.registries import PATHS, best_masks, mask_method_of_stage, mask_round_of_stage
from wsss_core.report import write_report
from wsss_core.requests import PathRequest
from wsss_core.run_config import RUN_DECIDES, RunConfig, applicable_paths, check_overrides, resolve_run_config
from wsss_core.store import Workspace


# The flow of each method a path (wsss_core.registries.PATHS) runs: the core names methods, not flows.
METHOD_FLOWS = {"graphnet": graphnet_flow, "affinitynet": affinitynet_flow}


@dataclass
class WholeRun:
    """What `wsss run` did: ingest summaries, one PipelineRun per path and per path's rounds, the joint evaluation."""

    ingest: list[StageSummary] = field(default_factory=list)
    paths: dict[str, PipelineRun] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    rounds: dict[str, PipelineRun] = field(default_factory=dict)  # by path
    evaluation: dict[str, dict] | None = None
    report: str | None = None  # the HTML report written last (wsss_core.report)

    @property
    def summaries(self) -> list[StageSummary]:
        runs = [*self.paths.values(), *self.rounds.values()]
        return self.ingest + [s for run in runs for s in run.summaries]

    @property
    def mask_stages(self) -> list[str]:
        # once each: graphnet-tags and affinitynet both make (and list) pseudo/cam
        return list(dict.fromkeys(stage for run in [*self.paths.values(), *self.rounds.values()] for stage in run.mask_stages))

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.summaries)


def ingest_dataset(workspace: str, config: RunConfig, execution: Execution) -> StageSummary:
    settings = config.ingest
    return flow_result(
        ingest_flow, root=settings.root, workspace=workspace, format=settings.format, split=list(settings.splits),
        scribbles_dir=settings.scribbles_dir, image_dir=settings.image_dir,
        options=ReadOptions(max_side=settings.max_side), execution=execution,
    )


def generate_dataset(config: RunConfig) -> None:
    """The built-in dataset into ingest.root, unless it is there already (wsss_core.data.wild.ensure_variant)."""
    from wsss_core.data.wild import ensure_variant

    g = config.generate
    started = time.perf_counter()
    if ensure_variant(config.ingest.root, g.variant, g.images, g.width, g.height, g.seed, g.parsed_label_mix()):
        mix = f", labels {g.label_mix}" if g.label_mix else ""
        announce(f"run: generated the built-in dataset ({g.variant}, {g.images} images of {g.width}x{g.height}, "
                 f"seed {g.seed}{mix}) in {config.ingest.root} in {time.perf_counter() - started:.0f} s")
    else:
        announce(f"run: the built-in dataset is in {config.ingest.root} already")


def path_request(name: str, config: RunConfig, **run_level: Any) -> PathRequest:
    """The request of one path of the run: its run config section (the path's request type),
    with what its registry entry fixes (the supervision), tags' CAM rows as the affinitynet
    section makes them (one training, one key) and the run's own settings."""
    spec = PATHS.get(name)
    request = replace(getattr(config, spec.settings), **spec.parameters, **run_level)
    if spec.cam_settings:
        request = replace(request, cam=getattr(config, spec.cam_settings).cam_settings())
    return request


def run_level(config: RunConfig, splits: list[str] | None, run_name: str) -> dict[str, Any]:
    """What the run sets in every path's request: its evaluation is left to the joint table."""
    return {"splits": splits, "device": config.device, "evaluate": False, "log_to_mlflow": config.mlflow, "run_name": run_name}


def run_path(name: str, workspace: str, config: RunConfig, splits: list[str] | None, execution: Execution) -> PipelineRun:
    """One path as its own flow (a subflow of run)."""
    request = path_request(name, config, **run_level(config, splits, name))
    return flow_result(METHOD_FLOWS[PATHS.get(name).method], workspace=workspace, request=request, execution=execution)


def run_rounds(name: str, labels: str, workspace: str, config: RunConfig, splits: list[str] | None,
               execution: Execution) -> PipelineRun:
    """A path's segmentation rounds as their own flow (a subflow of run), evaluated in the joint table."""
    request = config.segmentation.request(labels=labels, **run_level(config, splits, f"{name}-rounds"))
    return flow_result(segment_flow, workspace=workspace, request=request, execution=execution)


def round_masks(paths: dict[str, PipelineRun], asked: tuple[str, ...] | None,
                finished: Callable[[str], Collection[str]]) -> tuple[dict[str, str | None], str | None]:
    """({path: the masks its segmentation rounds train on}, the line that says why).

    asked (segmentation.paths): each of those paths' final masks. None (the default): one set of
    rounds per supervision the paths ran for, on its best masks (wsss_core.registries.BEST_MASKS,
    a fixed choice: no GT needed) among the mask sets with finished masks (finished(stage): their
    image ids), under the path that made them."""
    if asked is not None:
        return {name: path.final_masks for name, path in paths.items() if name in asked}, None
    made: dict[str, dict[str, str]] = {}  # supervision -> {mask stage: the path that made it}
    for name, path in paths.items():
        supervision = PATHS.get(name).needs
        for stage in path.mask_stages:
            found = mask_method_of_stage(stage)
            if found and found[1].supervision == supervision and mask_round_of_stage(stage) == 0 and finished(stage):
                made.setdefault(supervision, {}).setdefault(stage, name)
    labels, said = {}, []
    finals = {path.final_masks for path in paths.values()}
    for supervision, stages in made.items():
        best = best_masks(supervision, stages, finals)
        if best is None:
            continue
        labels[stages[best]] = best
        others = [s.removeprefix("pseudo/") for s in stages if s != best]
        said.append(f"{supervision} {best}" + (f" (not {', '.join(others)})" if others else ""))
    for name, path in paths.items():  # a path none of whose masks are ranked: its own final masks, as before
        if PATHS.get(name).needs not in made:
            labels.setdefault(name, path.final_masks)
    labels = {name: labels[name] for name in paths if name in labels}
    why = ("run: segmentation rounds on each supervision's best masks, a fixed choice measured without GT on "
           "datasets nobody tuned on (docs/results.md#each-supervisions-best-masks): " + "; ".join(said)) if said else None
    return labels, why


def rounds_blocked(ws: Workspace, config: RunConfig, masks: str | None) -> str | None:
    """Why rounds on these masks cannot run (None: they can)."""
    if masks is None or not ws.done_ids(masks):
        return f"{masks or 'its masks'} has no finished masks"
    if config.segmentation.train_split not in ws.splits():
        return f"no split {config.segmentation.train_split!r} to train on (splits: {', '.join(ws.splits()) or 'none'})"
    return None


def run_everything(workspace: str, config: RunConfig, run_name: str) -> WholeRun:
    check_overrides(config)
    execution = Execution(**config.execution)
    splits = list(config.splits) if config.splits else None
    whole = WholeRun()
    if config.generate.images:
        generate_dataset(config)
    if config.ingest.root:
        whole.ingest = [ingest_dataset(workspace, config, execution)]
    ws = Workspace(workspace).require()
    chosen, whole.skipped = applicable_paths(config.paths, ws.weak_labels())
    for name, why in whole.skipped.items():
        announce(f"run: skipping {name}: {why}")
    # The paths', the rounds' and the evaluation's runs nest under this flow run's run (flows.tracking).
    with flow_run_tracking(ws, config.mlflow, "run", run_params(config, chosen), config):
        for name in chosen:
            announce(f"run: path {name}")
            whole.paths[name] = run_path(name, workspace, config, splits, execution)
        labels, why = ({}, None)
        if config.segmentation.rounds:
            labels, why = round_masks(whole.paths, config.segmentation.paths, ws.done_ids)
        if why:
            announce(why)
        for name, masks in labels.items():
            blocked = rounds_blocked(ws, config, masks)
            if blocked:
                announce(f"run: no segmentation rounds for {name}: {blocked}", warning=True)
                continue
            announce(f"run: {config.segmentation.rounds} segmentation round(s) on {masks}")
            whole.rounds[name] = run_rounds(name, masks, workspace, config, splits, execution)
        masks = whole.mask_stages
        if config.evaluate and masks and has_ground_truth(ws):
            whole.evaluation = evaluate_flow(workspace, masks, run_name=run_name, log_to_mlflow=config.mlflow, splits=splits)
    whole.report = write_run_report(workspace)
    return whole


def write_run_report(workspace: str) -> str | None:
    """The last step: the workspace's HTML report (`wsss report`); a report that cannot be
    written is a warning, not a failed run (the masks and scores are there)."""
    try:
        path = write_report(workspace)
    except WsssError as error:
        announce(f"run: no report: {error}", warning=True)
        return None
    announce(f"run: report {path}")
    return str(path)


def run_params(config: RunConfig, chosen: list[str]) -> dict[str, Any]:
    """The run's readable settings: the run config without how it executes (nor what the run
    sets in each path's request itself), and the paths it runs."""
    settings = config_to_dict(config)
    for name in ("execution", "mlflow"):
        settings.pop(name, None)
    for section, names in RUN_DECIDES.items():
        for name in names:
            settings[section].pop(name, None)
    return {**settings, "paths": chosen}


@flow(name="run")
def run_flow(
    workspace: str,
    config_file: str | None = None,
    settings: dict[str, Any] | None = None,
    run_name: str = "run",
) -> WholeRun:
    """The whole pipeline on a workspace: optional ingest, every applicable path, segmentation rounds
    on each supervision's best masks (segmentation.rounds, default 1), one evaluation, the HTML report
    (reports/report.html).

    config_file: a YAML run config (examples/run.yaml); settings: values by name on top of
    it, e.g. {"paths": ["affinitynet"], "graphnet": {"overrides": {"gcn": {"epochs": 50}}}}.
    Ends Failed (with the count per stage) when images failed; every path still runs.
    """
    whole = run_everything(workspace, resolve_run_config(config_file, settings), run_name)
    return outcome(whole, whole.summaries, workspace)
