"""Tasks of the AffinityNet (PSA) path: two training tasks and the batched per-image stages.

Every task is called as task(workspace, stage, key, image_ids, **params) by the pipeline
runner (flows/pipeline.py); the table in flows/affinitynet.py wires them.

    train-cam            ONE task: CAM classifier on every image with tags -> models/cam/model.pt
    cams/<id>            {scores: float16 (K, H, W), classes: int32 (K,)} multi-scale + flip CAMs
    pseudo/cam/<id>      uint8 HxW (fixed background score)
    affinity-labels/<id> uint8 HxW confident labels (0 bg, class, 255 neutral)
    train-affinitynet    ONE task: AffinityNet on the confident labels -> models/affinitynet/model.pt
    rw/<id>              {scores: float32 (K+1, h, w) walked on the stride grid, classes: int32 (K,)}
    pseudo/rw/<id>, pseudo/rw-crf/<id>   uint8 HxW

Training tasks (dataset-level rows) carry the "gpu" tag and go through tasks.training.run_training:
a nested MLflow run (readable params, per-epoch metrics, the checkpoint), a checkpoint every
epoch, resumed after a crash, reused when finished under the same stage key. DataLoader
workers stay 0: forked loader processes die with the threads of Prefect's server.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from prefect import task

from tasks.common import STAGE_TASK_OPTIONS, resolve_device, run_batch_in_task, single_torch_thread, torch_threads
from tasks.training import (
    WorkspaceItems,
    check_image_shape,
    run_training,
    training_params,
    training_tags,
    usable_images,
)
from wsss_core.psa.affinity import AffinityConfig, confident_label_map
from wsss_core.psa.affinitynet import AffinityNet, AffinityTrainConfig, load_affinitynet, predict_affinities, train_affinitynet
from wsss_core.psa.cam import CamNet, CamTrainConfig, infer_cams, load_camnet, train_cam_classifier
from wsss_core.confidence import mask_attributes, score_confidence
from wsss_core.crf import CRFConfig
from wsss_core.errors import BadInputError
from wsss_core.psa.config import CamInferenceConfig, check_tags
from wsss_core.psa.masks import CamMaskConfig, cam_scores, crf_score_mask, keep_confident_labels, score_mask
from wsss_core.psa.random_walk import RandomWalkConfig, grid_shape, upsample_walked, walk_on_grid
from wsss_core.runner import BatchReport, DatasetReport
from wsss_core.store import AFFINITYNET_CHECKPOINT, CAM_CHECKPOINT, Workspace
from wsss_core.tracking import Tracking

TRAIN_CAM = "train-cam"
CAMS = "cams"
PSEUDO_CAM = "pseudo/cam"
AFFINITY_LABELS = "affinity-labels"
TRAIN_AFFINITYNET = "train-affinitynet"
RW = "rw"
PSEUDO_RW = "pseudo/rw"
PSEUDO_RW_CRF = "pseudo/rw-crf"

def foreground_classes(workspace: Workspace) -> int:
    return len(workspace.classes) - 1


def read_tags(workspace: Workspace, image_id: str) -> np.ndarray:
    if not workspace.has_array("tags", image_id):
        raise BadInputError(image_id, "no image tags in the workspace (ingest writes tags/<id>)")
    return check_tags(workspace.read_array("tags", image_id), foreground_classes(workspace), image_id)


def read_image(workspace: Workspace, image_id: str) -> np.ndarray:
    image = workspace.read_array("images", image_id)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError(image_id, f"image is {image.shape} {image.dtype}, not HxWx3 uint8")
    return image


def read_scores(workspace: Workspace, stage: str, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32, classes int64) of a cams/ or rw/ array pair."""
    scores = workspace.read_array(stage, image_id, "scores").astype(np.float32)
    classes = workspace.read_array(stage, image_id, "classes").astype(np.int64)
    return scores, classes


# ----------------------------------------------------------------------------- train-cam


@task(name="train-cam", tags=["gpu"], persist_result=False)
def train_cam_task(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: CamTrainConfig,
    weights: dict[str, Any],
    device: str | None = None,
    threads: int | None = None,
    tracking: Tracking | None = None,
) -> DatasetReport:
    """Train the CAM classifier on the images (with at least one tag) -> <workspace>/models/cam/model.pt.

    weights: the record of the weights it starts from (wsss_core.weights), logged with the run.
    """
    target = resolve_device(device)
    report = DatasetReport(stage, str(workspace.path / CAM_CHECKPOINT))

    tag_counts: dict[str, int] = {}

    def check(image_id: str) -> None:
        check_image_shape(workspace, image_id)
        tag_counts[image_id] = len(read_tags(workspace, image_id))

    # An image without tags (background only) is seen, not failed: there is nothing in it to learn.
    report.images, report.failed = usable_images(workspace, stage, key, image_ids, check)
    tagged = [i for i in report.images if tag_counts[i] > 0]
    items = WorkspaceItems(tagged, lambda i: (read_image(workspace, i), read_tags(workspace, i).tolist()))
    params = training_params("cam", weights, len(tagged), config)

    def train(on_epoch_end: Callable[[int, dict[str, float]], None]) -> None:
        with torch_threads(threads, target):
            train_cam_classifier(
                items, foreground_classes(workspace), config,
                device=target, checkpoint_path=report.artifact, on_epoch_end=on_epoch_end,
            )

    return run_training(workspace, report, key, params, tracking, train, training_tags(weights))


@lru_cache(maxsize=2)
def cached_camnet(checkpoint: str, model_key: str, device: str) -> CamNet:
    """One CamNet per (checkpoint, training key, device) and process."""
    return load_camnet(checkpoint, device)


# ----------------------------------------------------------------------------- cams and pseudo/cam


@task(name="cams-batch", **STAGE_TASK_OPTIONS)
def cams_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: CamInferenceConfig,
    model: str,
    device: str | None = None,
) -> BatchReport:
    """Multi-scale + flip CAMs of each image's tag classes, max-normalised, float16.

    model: the training stage whose classifier it uses (cached per process by its key).
    """
    target = resolve_device(device)
    network = cached_camnet(str(workspace.path / CAM_CHECKPOINT), workspace.stage_key(model) or "", str(target))

    def step(image_id: str) -> None:
        image = read_image(workspace, image_id)
        tags = read_tags(workspace, image_id)
        cams = infer_cams(network, image, tags.tolist(), config.scales, config.flip, target)
        workspace.write_array(stage, image_id, cams.astype(np.float16), name="scores")
        workspace.write_array(stage, image_id, tags.astype(np.int32), name="classes")

    with single_torch_thread(target):
        return run_batch_in_task(workspace, stage, key, image_ids, step)


@task(name="cam-masks-batch", **STAGE_TASK_OPTIONS)
def cam_masks_batch(
    workspace: Workspace, stage: str, key: str, image_ids: list[str], config: CamMaskConfig, cams: str
) -> BatchReport:
    """pseudo/cam: argmax of [fixed background score, CAMs]."""

    def step(image_id: str) -> None:
        maps, classes = read_scores(workspace, cams, image_id)
        scores = cam_scores(maps, classes, config)
        workspace.write_array(stage, image_id, score_mask(scores, classes), attributes=mask_attributes(score_confidence(scores)))

    return run_batch_in_task(workspace, stage, key, image_ids, step)


# ----------------------------------------------------------------------------- affinity labels


@task(name="affinity-labels-batch", **STAGE_TASK_OPTIONS)
def affinity_labels_batch(
    workspace: Workspace, stage: str, key: str, image_ids: list[str], config: AffinityConfig, cams: str
) -> BatchReport:
    """Confident labels at image resolution: alpha 4 (foreground) / alpha 32 (background), each dCRF'd.

    Kept at image resolution so that training crops image and labels together; the
    training turns each crop's labels into stride-8 pair labels (block majority).
    """

    def step(image_id: str) -> None:
        image = read_image(workspace, image_id)
        scores, classes = read_scores(workspace, cams, image_id)
        scores = np.clip(scores, 0.0, 1.0)  # float16 rounding may touch 1.0 + eps
        if len(classes) == 0:
            labels = np.zeros(image.shape[:2], dtype=np.uint8)
        else:
            labels = confident_label_map(image, scores, classes, config)
        workspace.write_array(stage, image_id, labels)

    return run_batch_in_task(workspace, stage, key, image_ids, step)


# ----------------------------------------------------------------------------- train-affinitynet


@task(name="train-affinitynet", tags=["gpu"], persist_result=False)
def train_affinitynet_task(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: AffinityTrainConfig,
    weights: dict[str, Any],
    labels: str,
    init_from_cam: bool = False,
    device: str | None = None,
    threads: int | None = None,
    tracking: Tracking | None = None,
) -> DatasetReport:
    """Train AffinityNet on the confident labels -> <workspace>/models/affinitynet/model.pt."""
    target = resolve_device(device)
    report = DatasetReport(stage, str(workspace.path / AFFINITYNET_CHECKPOINT))

    def check(image_id: str) -> None:
        shape = check_image_shape(workspace, image_id)
        if workspace.array_shape(labels, image_id) != shape[:2]:
            raise BadInputError(image_id, "affinity labels and image differ in size")

    report.images, report.failed = usable_images(workspace, stage, key, image_ids, check)
    items = WorkspaceItems(report.images, lambda i: (read_image(workspace, i), workspace.read_array(labels, i)))
    init_from = str(workspace.path / CAM_CHECKPOINT) if init_from_cam else None
    params = training_params("affinitynet", weights, len(report.images), config, init_from="cam" if init_from_cam else "weights")

    def train(on_epoch_end: Callable[[int, dict[str, float]], None]) -> None:
        with torch_threads(threads, target):
            train_affinitynet(
                items, config, device=target, checkpoint_path=report.artifact,
                on_epoch_end=on_epoch_end, init_from=init_from,
            )

    return run_training(workspace, report, key, params, tracking, train, training_tags(weights))


@lru_cache(maxsize=2)
def cached_affinitynet(checkpoint: str, model_key: str, device: str) -> AffinityNet:
    return load_affinitynet(checkpoint, device)


# ----------------------------------------------------------------------------- random walk


@task(name="random-walk-batch", **STAGE_TASK_OPTIONS)
def random_walk_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: RandomWalkConfig,
    cams: str,
    model: str,
    device: str | None = None,
) -> BatchReport:
    """AffinityNet affinities at the stride, then wsss_core's sparse walk (T = D^-1 W^beta, t steps)."""
    target = resolve_device(device)
    network = cached_affinitynet(
        str(workspace.path / AFFINITYNET_CHECKPOINT), workspace.stage_key(model) or "", str(target)
    )

    def step(image_id: str) -> None:
        image = read_image(workspace, image_id)
        scores, classes = read_scores(workspace, cams, image_id)
        if len(classes) == 0:
            walked = np.ones((1, *grid_shape(image.shape[:2], config.stride)), dtype=np.float32)
        else:
            aff = predict_affinities(network, image, target, stride=config.stride)  # type: ignore[arg-type]
            walked = walk_on_grid(np.clip(scores, 0.0, 1.0), aff, config, image.shape[:2])
        workspace.write_array(stage, image_id, walked.astype(np.float32), name="scores")
        workspace.write_array(stage, image_id, classes.astype(np.int32), name="classes")

    with single_torch_thread(target):
        return run_batch_in_task(workspace, stage, key, image_ids, step)


@task(name="rw-masks-batch", **STAGE_TASK_OPTIONS)
def rw_masks_batch(
    workspace: Workspace, stage: str, key: str, image_ids: list[str], walk: str, stride: int,
    crf: CRFConfig | None = None, confident: str | None = None,
) -> BatchReport:
    """pseudo/rw: argmax of the walked scores upsampled bilinearly (PSA); with crf, pseudo/rw-crf:
    the dense CRF on those scores normalised to sum 1 per pixel, then argmax. confident: the
    affinity-labels stage whose settled pixels keep their labels (the walk decides the rest)."""

    def step(image_id: str) -> None:
        walked, classes = read_scores(workspace, walk, image_id)
        image_shape = workspace.array_shape("images", image_id)[:2]
        scores = upsample_walked(walked, stride, image_shape)
        if confident is not None:
            scores = keep_confident_labels(scores, classes, workspace.read_array(confident, image_id))
        if crf is None:
            mask = score_mask(scores, classes)
        else:
            mask = crf_score_mask(read_image(workspace, image_id), scores, classes, crf)
        workspace.write_array(stage, image_id, mask, attributes=mask_attributes(score_confidence(scores)))

    return run_batch_in_task(workspace, stage, key, image_ids, step)
