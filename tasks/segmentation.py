"""Tasks of the segmentation rounds: train DeepLabV3 on a label set, predict a round's labels.

Called as task(workspace, stage, key, image_ids, **params) by the pipeline runner; the
table in flows/segment.py wires them.

    train-segmentation/<method>/round-<k>   ONE task: DeepLabV3 on the train split's labels
                                             -> models/segmentation/<method>/round-<k>/model.pt
    pseudo/<method>/round-<k>/<id>          uint8 HxW: that network's prediction (every split)

The training skips, resumes or starts exactly as the other trainings do (run_training:
a checkpoint per epoch, a finished one reused under the same key, an MLflow run).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from prefect import task

from tasks.affinitynet import read_image
from tasks.training import check_image_shape, run_training, training_params, training_tags, usable_images
from tasks.common import STAGE_TASK_OPTIONS, resolve_device, run_batch_in_task, single_torch_thread, torch_threads
from wsss_core.confidence import confidence_scores, mask_attributes
from wsss_core.errors import BadInputError
from wsss_core.manual import MANUAL, UsedMaskColumn, used_mask
from wsss_core.runner import BatchReport, DatasetReport
from wsss_core.segmentation.config import SegmentationInferenceConfig, SegmentationTrainConfig
from wsss_core.segmentation.model import SegmentationNet, build_segmentation_model, load_segmentation_model
from wsss_core.segmentation.predict import predict_round
from wsss_core.segmentation.train import train_segmentation
from wsss_core.store import ArrayColumn, Workspace
from wsss_core.tracking import Tracking
from wsss_core.weights import WeightsChoice


def segmentation_checkpoint(training_stage: str) -> Path:
    """models/segmentation/<method>/round-<k>/model.pt for train-segmentation/<method>/round-<k>."""
    return Path("models") / "segmentation" / training_stage.removeprefix("train-segmentation/") / "model.pt"


@task(name="train-segmentation", tags=["gpu"], persist_result=False)
def train_segmentation_task(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: SegmentationTrainConfig,
    weights: WeightsChoice,
    labels: str,
    round: int,
    backbone_from: dict[str, str] | None = None,
    device: str | None = None,
    threads: int | None = None,
    tracking: Tracking | None = None,
) -> DatasetReport:
    """Train DeepLabV3 on the images' ``labels`` masks (255 ignored; an image's manual mask in
    place of its ``labels`` mask, wsss_core.manual) -> models/segmentation/.../model.pt.

    weights: the backbone weights it starts from (resolved and load-tested by the flow);
    backbone_from: the training stage and key of the pipeline checkpoint those weights are
    (the CAM classifier, offline), logged with the run.
    An image whose label does not fit (size, values) is recorded and left out.
    """
    target = resolve_device(device)
    report = DatasetReport(stage, str(workspace.path / segmentation_checkpoint(stage)))
    Path(report.artifact).parent.mkdir(parents=True, exist_ok=True)

    def check(image_id: str) -> None:
        shape = check_image_shape(workspace, image_id)
        source = MANUAL if workspace.has_array(MANUAL, image_id) else labels
        if workspace.array_shape(source, image_id) != shape[:2]:
            raise BadInputError(f"{source}/{image_id}", f"label is {workspace.array_shape(source, image_id)}, the image {shape[:2]}")

    report.images, report.failed = usable_images(workspace, stage, key, image_ids, check)
    # Read on demand, picklable: loader workers (config.num_workers > 0) are spawned and get a copy.
    images, masks = ArrayColumn(workspace, "images", report.images), UsedMaskColumn(workspace, labels, report.images)
    params = training_params("segmentation", weights.record(), len(report.images), config, labels=labels, round=round,
                             backbone_from=(backbone_from or {}).get("stage"))

    def train(on_epoch_end: Callable[[int, dict[str, float]], None]) -> None:
        model = build_segmentation_model(
            config.backbone, len(workspace.classes), config.output_stride, weights, seed=config.seed
        )
        with torch_threads(threads, target):
            train_segmentation(
                model, images, masks, config, device=target, checkpoint_path=report.artifact, on_epoch_end=on_epoch_end
            )

    return run_training(workspace, report, key, params, tracking, train, training_tags(weights.record()))


@lru_cache(maxsize=2)
def cached_segmentation_model(checkpoint: str, model_key: str, device: str) -> SegmentationNet:
    """One network per (checkpoint, training key, device) and process."""
    return load_segmentation_model(checkpoint, device)


@task(name="predict-round-batch", tags=["gpu"], **STAGE_TASK_OPTIONS)
def predict_round_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: SegmentationInferenceConfig,
    model: str,
    labels: str,
    device: str | None = None,
) -> BatchReport:
    """A round's labels: the trained network's prediction of each image (scales, flips, CRF as configured).

    model: the training stage whose network predicts (cached per process by its key).
    labels: the label set it trained on: an image's labels there (its manual mask, where it
    has one) shape its prediction as config says (predict.round_probabilities); an image
    without any gets the plain prediction.
    """
    target = resolve_device(device)
    checkpoint = workspace.path / segmentation_checkpoint(model)
    network = cached_segmentation_model(str(checkpoint), workspace.stage_key(model) or "", str(target))
    shaped = config.label_classes_only or config.label_odds is not None
    labelled = workspace.done_ids(labels) if shaped else set()

    def step(image_id: str) -> None:
        has_labels = shaped and (image_id in labelled or workspace.has_array(MANUAL, image_id))
        previous = used_mask(workspace, labels, image_id) if has_labels else None
        mask, probabilities = predict_round(network, read_image(workspace, image_id), config, target, previous)
        workspace.write_array(stage, image_id, mask, attributes=mask_attributes(confidence_scores(probabilities)))

    with single_torch_thread(target):
        return run_batch_in_task(workspace, stage, key, image_ids, step)
