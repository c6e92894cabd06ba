"""Flow: segmentation rounds, both papers' last stage, as a table.

    pseudo/<method> -> train-segmentation/<method>/round-1 (train split's labels)
        -> pseudo/<method>/round-1 (every image) -> train-segmentation/<method>/round-2
        -> pseudo/<method>/round-2 ... -> evaluate (round 0 = the pseudo masks, then every round)

Round k trains DeepLabV3 on round k-1's labels of the train split, then predicts every
image: those predictions are round k's labels (exportable like any pseudo masks), and
on the other splits (val) they are what the round is evaluated on. An image with a manual
mask (a person's, wsss_core.manual) trains every round on that mask instead.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from prefect import flow

from flows.affinitynet import default_train_threads, has_gpu
from flows.common import Execution, announce, outcome
from flows.evaluate import evaluate_flow, has_ground_truth
from flows.path import PathPlan, run_path
from flows.pipeline import Pipeline, PipelineRun, Stage
from flows.tracking import mask_settings
from tasks import segmentation as t
from tasks.affinitynet import TRAIN_CAM
from wsss_core.errors import UsageError, WorkspaceError
from wsss_core.manual import MANUAL
from wsss_core.registries import mask_method_of_stage
from wsss_core.requests import SegmentationRequest
from wsss_core.config import config_to_dict
from wsss_core.segmentation.config import ResolvedSegmentationConfig, SegmentationConfig, resolve_config
from wsss_core.tracking import Tracking
from wsss_core.store import CAM_CHECKPOINT, IMAGES, Workspace
from wsss_core.weights import WeightsChoice, offline_said

ROUND_NAME = re.compile(r"round-[0-9]+")
DEFAULT_TRAIN_SPLIT = "train"


def round_stages(labels: str, k: int) -> tuple[str, str]:
    """(training stage, mask stage) of round k on the label set pseudo/<method>."""
    method = labels.removeprefix("pseudo/")
    return f"train-segmentation/{method}/round-{k}", f"{labels}/round-{k}"


def labels_stage(ws: Workspace, labels: str) -> str:
    """pseudo/<method> for "<method>" or "pseudo/<method>": a finished pseudo-mask set of the workspace."""
    stage = labels if labels.startswith("pseudo/") else f"pseudo/{labels}"
    available = [s for s in ws.stages() if mask_method_of_stage(s) and not ROUND_NAME.fullmatch(s.rsplit("/", 1)[-1])]
    if mask_method_of_stage(stage) is None or ROUND_NAME.fullmatch(stage.rsplit("/", 1)[-1]) or stage not in available:
        raise UsageError(
            f"--labels {labels}: not a pseudo-mask set of this workspace (it has: {', '.join(available) or 'none yet'}; "
            "run a path first; round k trains on round k-1 by itself)"
        )
    if not ws.done_ids(stage):
        raise WorkspaceError(f"{ws.path}: {stage} has no finished masks yet")
    return stage


def segmentation_pipeline(
    labels: str,
    rounds: int,
    config: SegmentationConfig,
    weights: WeightsChoice,
    backbone_from: dict[str, str] | None = None,
    train_split: str = DEFAULT_TRAIN_SPLIT,
    device: str | None = None,
    train_threads: int | None = None,
    tracking: Tracking | None = None,
) -> Pipeline:
    """The rounds' table: a training row (the train split, dataset-level) and a prediction row per round.

    backbone_from: the stage and key of the pipeline checkpoint the backbone starts from
    (the CAM classifier, offline): hashed into the training's key, so it trains again
    when that checkpoint changes.
    """
    training = {"device": device, "threads": train_threads, "tracking": tracking}
    rows, previous = [], labels
    for k in range(1, rounds + 1):
        train_stage, masks_stage = round_stages(labels, k)
        params: dict[str, Any] = {"config": config.train, "weights": weights, "labels": previous, "round": k}
        if backbone_from:
            params["backbone_from"] = backbone_from
        rows += [
            Stage(train_stage, t.train_segmentation_task, (IMAGES, previous, MANUAL), params, training,
                  step=f"round-{k}", dataset_level=True, splits=(train_split,)),
            Stage(masks_stage, t.predict_round_batch, (IMAGES, train_stage, previous, MANUAL),
                  {"config": config.inference, "model": train_stage, "labels": previous}, {"device": device},
                  step=f"round-{k}", masks=True, optional_reads=(previous,)),
        ]
        previous = masks_stage
    return Pipeline(f"segment-{labels.removeprefix('pseudo/')}", tuple(rows), inputs=(labels,))


def check_image_ids(ws: Workspace) -> None:
    """pseudo/<method>/round-<k> is a group beside the images' arrays: an image may not have that name."""
    clashing = [i for i in ws.image_ids() if ROUND_NAME.fullmatch(i)]
    if clashing:
        raise WorkspaceError(f"{ws.path}: image ids {clashing[:3]} clash with the rounds' stage names (round-<k>)")


def train_images(ws: Workspace, train_split: str, labels: str) -> list[str]:
    if train_split not in ws.splits():
        raise UsageError(
            f"--train-split {train_split}: no such split in {ws.path} (splits: {', '.join(ws.splits()) or 'none'})"
        )
    done = ws.done_ids(labels)
    ids = [i for i in ws.split_ids(train_split) if i in done]
    if not ids:
        raise WorkspaceError(f"{ws.path}: no image of split {train_split!r} has finished {labels} masks to train on")
    return ids


def backbone_source(ws: Workspace) -> tuple[str | None, dict[str, str] | None]:
    """(the CAM classifier's checkpoint, {stage, key}) when its training finished, else (None, None):
    offline, the only trained backbone the pipeline has."""
    key = ws.stage_key(TRAIN_CAM)
    if key is None or not ws.done_ids(TRAIN_CAM, key) or not (ws.path / CAM_CHECKPOINT).is_file():
        return None, None
    return str(ws.path / CAM_CHECKPOINT), {"stage": TRAIN_CAM, "key": key}


def round_overrides(request: SegmentationRequest) -> dict[str, Any]:
    named = {"train.backbone": request.backbone, "train.weights": request.weights, "train.output_stride": request.output_stride}
    return {**{k: v for k, v in named.items() if v is not None}, **request.overrides}


def segment_plan(ws: Workspace, request: SegmentationRequest) -> PathPlan:
    """The request checked against the workspace (labels, train split), resolved and announced."""
    rounds, train_split = request.rounds, request.train_split
    if rounds < 1:
        raise UsageError(f"--rounds {rounds}: at least one round")
    check_image_ids(ws)
    base = labels_stage(ws, request.labels)
    trainable = train_images(ws, train_split, base)
    fallback, backbone_from = backbone_source(ws)
    resolved = resolve_config(request.preset, len(trainable), has_gpu(request.device), round_overrides(request), fallback)
    announce(f"segment: preset {resolved.preset} ({resolved.why}), {resolved.config.train.backbone}, "
             f"{rounds} round(s) on {base}, trained on {len(trainable)} images of split {train_split}")
    if resolved.weights.fallback:
        announce(resolved.weights.note, warning=not offline_said())
    from_checkpoint = fallback is not None and resolved.weights.weights == fallback
    settings = round_settings(base, rounds, resolved, train_split)
    threads = request.train_threads or default_train_threads()

    def table(tracking: Tracking | None) -> Pipeline:
        return segmentation_pipeline(base, rounds, resolved.config, resolved.weights,
                                     backbone_from if from_checkpoint else None, train_split, request.device, threads, tracking)

    def evaluate(run: PipelineRun, name: str) -> dict | None:
        if not has_ground_truth(ws):
            announce("evaluate: no ground-truth masks in this workspace; nothing to score")
            return None
        return evaluate_flow(str(ws.path), [base, *run.mask_stages], run_name=name,
                             log_to_mlflow=request.log_to_mlflow, splits=request.split_list)

    return PathPlan(
        "segment", "flows.segment:segment_flow", replace(request, labels=base, preset=resolved.preset), settings,
        resolved.config, ws.select_ids(request.splits), table, lambda stage: {**mask_settings(ws, base), **settings}, evaluate,
        inherit=("labels", "preset"),
        notes={"preset": resolved.preset, "preset_why": resolved.why, "weights": {"segmentation": resolved.weights_record()}},
    )


def round_settings(labels: str, rounds: int, resolved: ResolvedSegmentationConfig, train_split: str) -> dict[str, Any]:
    """What a segment run is, as a person reads it (MLflow params): the label set, rounds,
    preset, network, weights asked for and used, then every config value by its `--set` name."""
    weights = {k: v for k, v in resolved.weights_record().items() if k != "note"}
    return {
        "labels": labels, "rounds": rounds, "preset": resolved.preset, "train_split": train_split,
        "network": resolved.config.train.backbone, "weights": weights, **config_to_dict(resolved.config),
    }


@flow(name="segment")
def segment_flow(
    workspace: str,
    request: SegmentationRequest,
    execution: Execution = Execution(),
    only_ids: list[str] | None = None,
) -> PipelineRun:
    """Segmentation rounds on a pseudo-mask set (wsss_core.requests.SegmentationRequest: every
    choice, with its default): DeepLabV3 trained on the train split's labels predicts every
    image; round k trains on round k-1's predictions.

    labels: the round-0 masks, a method of the workspace (gcn-scribbles, rw-crf, ...). preset
    auto: paper (DeepLabV3's VOC schedule, ResNet-50) from 1000 training images with a GPU,
    else small (CPU-sized, ResNet-18). Offline, the backbone starts from the pipeline's CAM
    classifier when it has one that fits, else from random init (loudly, recorded). splits:
    the images predicted (default: every image); the network trains on train_split only.
    Ends Failed (with the count per stage) when images failed; the result is still returned.
    """
    ws = Workspace(workspace).require()
    run = run_path(ws, segment_plan(ws, request), request, execution, only_ids)
    return outcome(run, run.summaries, workspace)
