"""Flow: the AffinityNet (PSA, Ahn & Kwak 2018) path, image tags to evaluated pseudo masks, as a table.

    train-cam -> cams -> pseudo/cam -> affinity-labels -> train-affinitynet
        -> rw -> pseudo/rw [-> pseudo/rw-crf] -> evaluate (CAM, CAM+RW, CAM+RW+CRF)

The two trainings are dataset-level rows that train again whenever images join after them
(RETRAIN_ON_ANY_LATE_IMAGE, wsss_core.refit): served by networks trained without them,
late images lost far more than training noise (benchmarks/late_images_psa.py).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from prefect import flow

from flows.common import Execution, announce, outcome
from flows.evaluate import evaluate_path
from flows.path import PathPlan, run_path
from flows.pipeline import Pipeline, PipelineRun, Stage
from tasks import affinitynet as t
from wsss_core.psa.config import AffinityNetPathConfig, resolve_config, run_settings
from wsss_core.refit import RefitRule
from wsss_core.registries import mask_method_of_stage
from wsss_core.requests import AffinityNetRequest
from wsss_core.store import IMAGES, TAGS, Workspace
from wsss_core.tracking import Tracking
from wsss_core.weights import offline_said


# A late image served by networks trained without it loses more than the training noise
# (benchmarks/late_images_psa.py), and only a training with it gives it a clean run's masks.
RETRAIN_ON_ANY_LATE_IMAGE = RefitRule(late_fraction=0.0)


def cam_rows(
    config: AffinityNetPathConfig,
    weights: dict[str, dict[str, Any]],
    device: str | None = None,
    train_threads: int | None = None,
    tracking: Tracking | None = None,
) -> list[Stage]:
    """train-cam -> cams -> pseudo/cam -> affinity-labels: the rows both the AffinityNet table
    and the GraphNet table for tags use (same rows, same keys: either path reuses the other's)."""
    training = {"device": device, "threads": train_threads, "tracking": tracking}
    return [
        Stage(t.TRAIN_CAM, t.train_cam_task, (IMAGES, TAGS),
              {"config": config.cam_train, "weights": weights["cam"]}, training, dataset_level=True,
              refit=RETRAIN_ON_ANY_LATE_IMAGE),
        Stage(t.CAMS, t.cams_batch, (IMAGES, TAGS, t.TRAIN_CAM),
              {"config": config.cam_inference, "model": t.TRAIN_CAM}, {"device": device}),
        Stage(t.PSEUDO_CAM, t.cam_masks_batch, (t.CAMS,), {"config": config.cam_mask, "cams": t.CAMS}, step=t.CAMS, masks=True),
        Stage(t.AFFINITY_LABELS, t.affinity_labels_batch, (IMAGES, t.CAMS),
              {"config": config.affinity_labels, "cams": t.CAMS}),
    ]


def affinitynet_pipeline(
    config: AffinityNetPathConfig,
    weights: dict[str, dict[str, Any]],
    crf: bool,
    device: str | None = None,
    train_threads: int | None = None,
    tracking: Tracking | None = None,
) -> Pipeline:
    """The AffinityNet table for one request. weights: the records of resolve_weights;
    tracking: the flow run's MLflow run, for the trainings' nested runs (None: off)."""
    training = {"device": device, "threads": train_threads, "tracking": tracking}
    from_cam = config.affinity_init == "cam"
    stride = config.random_walk.stride
    # the band rule reads the confident labels (and its key follows them); PSA's masks do not
    confident = (t.AFFINITY_LABELS,) if config.rw_mask.keep_confident else ()
    band = {"confident": t.AFFINITY_LABELS} if confident else {}
    rows = [
        *cam_rows(config, weights, device, train_threads, tracking),
        Stage(t.TRAIN_AFFINITYNET, t.train_affinitynet_task,
              (IMAGES, t.AFFINITY_LABELS) + ((t.TRAIN_CAM,) if from_cam else ()),
              {"config": config.affinity_train, "weights": weights["affinitynet"], "labels": t.AFFINITY_LABELS,
               "init_from_cam": from_cam}, training, dataset_level=True, refit=RETRAIN_ON_ANY_LATE_IMAGE),
        Stage(t.RW, t.random_walk_batch, (IMAGES, t.CAMS, t.TRAIN_AFFINITYNET),
              {"config": config.random_walk, "cams": t.CAMS, "model": t.TRAIN_AFFINITYNET}, {"device": device},
              step="random-walk"),
        Stage(t.PSEUDO_RW, t.rw_masks_batch, (t.RW, *confident), {**band, "walk": t.RW, "stride": stride},
              step="masks", masks=True),
    ]
    if crf:
        rows.append(Stage(t.PSEUDO_RW_CRF, t.rw_masks_batch, (IMAGES, t.RW, *confident),
                          {**band, "walk": t.RW, "stride": stride, "crf": config.rw_crf}, step="masks", masks=True))
    return Pipeline("affinitynet", tuple(rows), final_masks=t.PSEUDO_RW_CRF if crf else t.PSEUDO_RW)


def default_train_threads() -> int:
    """Torch threads for a CPU training task: every core (the training task runs alone)."""
    return max(1, os.cpu_count() or 1)


def has_gpu(device: str | None) -> bool:
    if device is not None:
        return device.startswith("cuda")
    import torch

    return torch.cuda.is_available()


def affinitynet_plan(ws: Workspace, request: AffinityNetRequest) -> PathPlan:
    """The request resolved (preset by data size and GPU, weights load-tested) and announced."""
    image_ids = ws.select_ids(request.splits)
    resolved = resolve_config(request.preset, len(image_ids), has_gpu(request.device), request.backbone,
                              request.weights, request.stride, request.overrides)
    announce(f"affinitynet: preset {resolved.preset} ({resolved.why})")
    for network, record in resolved.weights.items():
        if record.get("fallback"):
            announce(f"{network}: {record['note']}", warning=not offline_said())
    settings = run_settings(resolved, request.crf)
    threads = request.train_threads or default_train_threads()

    def table(tracking: Tracking | None) -> Pipeline:
        return affinitynet_pipeline(resolved.config, resolved.weights, request.crf, request.device, threads, tracking)

    def evaluate(run: PipelineRun, name: str) -> dict | None:
        return evaluate_path(ws, "tags", run.mask_stages, name, request.log_to_mlflow, request.split_list)

    return PathPlan(
        "affinitynet", "flows.affinitynet:affinitynet_flow", replace(request, preset=resolved.preset), settings,
        resolved.config, image_ids, table, lambda stage: {**settings, "method": method_of(stage)}, evaluate,
        inherit=("path", "supervision", "preset"),
        notes={"preset": resolved.preset, "preset_why": resolved.why, "weights": resolved.weights},
    )


def method_of(stage: str) -> str:
    found = mask_method_of_stage(stage)
    return found[0] if found else stage


@flow(name="affinitynet")
def affinitynet_flow(
    workspace: str,
    request: AffinityNetRequest = AffinityNetRequest(),
    execution: Execution = Execution(),
    only_ids: list[str] | None = None,
) -> PipelineRun:
    """Pseudo masks from image tags for every image of the request's splits
    (wsss_core.requests.AffinityNetRequest: every choice, with its default).

    preset auto: paper (PSA's schedule) from 1000 images with a GPU, else small. Pretrained
    weights that cannot be loaded fall back to random init, loudly, recorded in the training
    runs' params. only_ids: re-run just these images (a retry: same request, their finished
    stages skipped). Ends Failed (with the count per stage) when images failed; the result is
    still returned.
    """
    ws = Workspace(workspace).require()
    run = run_path(ws, affinitynet_plan(ws, request), request, execution, only_ids)
    return outcome(run, run.summaries, workspace)
