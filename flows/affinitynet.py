"""Flow: the AffinityNet (PSA) path, image tags to evaluated pseudo masks, as one Prefect flow.

    train-cam -> cams -> pseudo/cam -> affinity-labels -> train-affinitynet
        -> rw -> pseudo/rw (-> pseudo/rw-crf) -> evaluate (CAM, CAM+RW, CAM+RW+CRF)

Each stage records its config and a key chained with the keys of the stages it reads
(prepare_stage); a training stage's key also hashes the ids of its training images. So
repeating the flow skips finished images and finished trainings, and changing a
stage's config recomputes that stage and every stage after it, nothing before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from prefect import Task, flow

from flows.common import (
    DEFAULT_BATCH_SIZE,
    StageSummary,
    check_choice,
    console,
    eligible_ids,
    prepare_stage,
    run_stage_batches,
)
from flows.evaluate import evaluate_flow
from tasks import affinitynet as t
from wsss_core.backbones import NO_WEIGHTS, resolve_weights
from wsss_core.config import config_to_dict
from wsss_core.psa.config import AffinityNetPathConfig, ids_digest
from wsss_core.store import INGEST_STAGE, Workspace

STEPS = ("train-cam", "cams", "affinity-labels", "train-affinitynet", "random-walk", "masks", "evaluate")
MASK_STAGES = (t.PSEUDO_CAM, t.PSEUDO_RW, t.PSEUDO_RW_CRF)


@dataclass
class AffinityNetRun:
    """What one run did: a summary per stage, the training reports, the evaluation (if any)."""

    summaries: list[StageSummary] = field(default_factory=list)
    trainings: dict[str, t.TrainingReport] = field(default_factory=dict)
    mask_stages: list[str] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, dict] | None = None

    @property
    def ok(self) -> bool:
        return all(summary.ok for summary in self.summaries)


def resolve_path_weights(config: AffinityNetPathConfig) -> tuple[AffinityNetPathConfig, dict[str, Any]]:
    """Load-test the requested pretrained weights; when they cannot be had, train from random init.

    Returns the config the networks really train with and a record of what was asked
    for, what is used and why (logged with every training run). Warns loudly on a fallback.
    """
    record: dict[str, Any] = {}
    cam, aff = config.cam_train, config.affinity_train
    nets = [("cam", cam)] + ([("affinitynet", aff)] if config.affinity_init == "weights" else [])
    for name, net in nets:
        requested = None if net.weights is None else str(net.weights)
        if requested is None or requested.strip().lower() in NO_WEIGHTS:
            record[name] = {"requested": requested, "used": "none", "note": "random init requested", "fallback": False}
            continue
        state_dict, weights_record = resolve_weights(net.backbone, requested)
        fallback = state_dict is None
        record[name] = {
            "requested": requested, "used": weights_record.used, "note": weights_record.reason, "fallback": fallback,
        }
        if fallback:
            console.print(
                f"[bold red]WARNING:[/bold red] pretrained weights {requested!r} of {net.backbone} could not be "
                f"loaded for the {name} network (offline?); training from RANDOM INIT. {weights_record.reason}"
            )
            if name == "cam":
                cam = replace(cam, weights="none")
            else:
                aff = replace(aff, weights="none")
    if config.affinity_init == "cam":
        record["affinitynet"] = {"requested": "cam", "used": f"backbone of {t.CAM_CHECKPOINT}", "fallback": False}
    return replace(config, cam_train=cam, affinity_train=aff), record


def training_summary(report: t.TrainingReport, key: str, candidates: list[str]) -> StageSummary:
    summary = StageSummary(report.stage, key, total=len(candidates), failed=dict(report.failed))
    if report.trained:
        summary.done = len(report.images)
    else:
        summary.skipped = len(report.images)
    return summary


@flow(name="affinitynet")
def affinitynet_flow(
    workspace: str,
    config: AffinityNetPathConfig = AffinityNetPathConfig.small(),
    crf: bool = True,
    device: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    until: str | None = None,
    evaluate: bool = True,
    log_to_mlflow: bool = True,
    train_threads: int | None = None,
    run_name: str | None = None,
) -> AffinityNetRun:
    """Pseudo masks from image tags (PSA, Ahn & Kwak 2018) for every ingested image.

    config: every stage's settings (AffinityNetPathConfig.paper() / .small(); the CLI
    applies --backbone / --weights / --stride to it). Pretrained weights that cannot be
    loaded fall back to random init with a warning, recorded in the training runs' params.
    device: where the networks run (default: CUDA when available). train_threads: torch
    threads of a CPU training (default: torch's own setting). until: stop after that step.
    """
    check_choice(until, STEPS, "step")
    ws = Workspace(workspace).require()
    run = AffinityNetRun()
    options: dict[str, Any] = dict(batch_size=batch_size, progress=progress)
    config, run.weights = resolve_path_weights(config)

    def batched(task: Task, stage: str, key_config: Any, upstream: list[str], **kwargs: Any) -> StageSummary:
        """Run a batched stage on the images its non-training inputs finished."""
        key = prepare_stage(ws, stage, key_config, upstream)
        ids = eligible_ids(ws, [s for s in upstream if s not in t.TRAINING_STAGES])
        summary = run_stage_batches(task, ws, stage, key, ids, **options, **kwargs)
        run.summaries.append(summary)
        return summary

    def train(task: Task, stage: str, key_config: dict, upstream: list[str], candidates: list[str], **kwargs: Any) -> str:
        key = prepare_stage(ws, stage, {**key_config, "images": ids_digest(candidates)}, upstream)
        params = {"stage_key": key, "weights": run.weights, "workspace": str(ws.path)}
        report = task(
            workspace=ws, key=key, image_ids=candidates, params=params, device=device,
            threads=train_threads, log_to_mlflow=log_to_mlflow, **kwargs,
        )
        run.trainings[stage] = report
        run.summaries.append(training_summary(report, key, candidates))
        verb = "trained" if report.trained else "finished checkpoint found, not retrained"
        if report.resumed_from_epoch:
            verb = f"resumed from epoch {report.resumed_from_epoch}, trained"
        last = report.history[-1] if report.history else {}
        console.print(f"{stage}: {verb} on {len(report.images)} images -> {report.checkpoint} {last}")
        return key

    # 1. CAM classifier on every image with tags
    cam_candidates = [i for i in ws.image_ids() if ws.has_array("tags", i) and ws.array_shape("tags", i)[0] > 0]
    cam_key = train(
        t.train_cam_task, t.TRAIN_CAM, {"train": config.cam_train, "weights": run.weights.get("cam")},
        [INGEST_STAGE], cam_candidates, config=config.cam_train,
    )
    if until == "train-cam":
        return run

    # 2. CAMs, pseudo/cam
    batched(t.cams_batch, t.CAMS, config.cam_inference, [INGEST_STAGE, t.TRAIN_CAM],
            config=config.cam_inference, model_key=cam_key, device=device)
    batched(t.cam_masks_batch, t.PSEUDO_CAM, config.cam_mask, [t.CAMS], config=config.cam_mask)
    run.mask_stages.append(t.PSEUDO_CAM)
    if until == "cams":
        return run

    # 3. confident affinity labels
    batched(t.affinity_labels_batch, t.AFFINITY_LABELS, config.affinity_labels, [INGEST_STAGE, t.CAMS],
            config=config.affinity_labels)
    if until == "affinity-labels":
        return run

    # 4. AffinityNet
    aff_upstream = [INGEST_STAGE, t.AFFINITY_LABELS] + ([t.TRAIN_CAM] if config.affinity_init == "cam" else [])
    aff_key = train(
        t.train_affinitynet_task, t.TRAIN_AFFINITYNET,
        {"train": config.affinity_train, "init": config.affinity_init, "weights": run.weights.get("affinitynet")},
        aff_upstream, sorted(ws.done_ids(t.AFFINITY_LABELS) & set(ws.image_ids())),
        config=config.affinity_train, init_from_cam=config.affinity_init == "cam",
    )
    if until == "train-affinitynet":
        return run

    # 5. random walk (sparse) on the stride grid
    batched(t.random_walk_batch, t.RW, config.random_walk, [INGEST_STAGE, t.CAMS, t.TRAIN_AFFINITYNET],
            config=config.random_walk, model_key=aff_key, device=device)
    if until == "random-walk":
        return run

    # 6. masks
    stride = config.random_walk.stride
    batched(t.rw_masks_batch, t.PSEUDO_RW, {"upsample": "bilinear", "crf": None}, [t.RW], stride=stride, crf=None)
    run.mask_stages.append(t.PSEUDO_RW)
    if crf:
        key_config = {"upsample": "bilinear", "normalise": "per pixel", "crf": config_to_dict(config.rw_crf)}
        batched(t.rw_masks_batch, t.PSEUDO_RW_CRF, key_config, [INGEST_STAGE, t.RW], stride=stride, crf=config.rw_crf)
        run.mask_stages.append(t.PSEUDO_RW_CRF)
    if until == "masks" or not evaluate:
        return run

    # 7. evaluation: CAM, CAM+RW, CAM+RW+CRF in one table
    if not any(ws.has_array("gt", i) for i in ws.image_ids()):
        console.print("evaluate: no ground-truth masks in this workspace; nothing to score")
        return run
    run.evaluation = evaluate_flow(
        str(ws.path), run.mask_stages, run_name=run_name or "affinitynet", log_to_mlflow=log_to_mlflow
    )
    return run


def default_train_threads() -> int:
    """Torch threads for a CPU training task: every core (the training task runs alone)."""
    return max(1, os.cpu_count() or 1)


def has_gpu() -> bool:
    return torch.cuda.is_available()
