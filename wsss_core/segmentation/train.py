"""Training DeepLabV3 on a label set: wsss_core.training.fit with DeepLab's augmentation,
cross-entropy ignoring 255, and bfloat16 autocast on CUDA.

fit gives the poly schedule, the epoch batches, a checkpoint per epoch and the resume
from it; augmentation draws only from (seed, epoch, image), so a resumed run sees the
crops an uninterrupted one would.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wsss_core.backbones import default_device
from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError, DatasetError
from wsss_core.psa.affinitynet import pad_labels
from wsss_core.segmentation.config import SegmentationTrainConfig
from wsss_core.segmentation.model import SegmentationNet
from wsss_core.training import (
    Augmentation,
    AugmentedItems,
    EpochCallback,
    augment,
    fit,
    pad_batch,
    use_frozen_batchnorm,
)

logger = logging.getLogger(__name__)

# Loader workers are spawned, never forked: the flows call this inside a process running
# Prefect, whose threads and locks a forked worker inherits half-held (such workers die).
WORKER_CONTEXT = "spawn"


def random_scale(
    image: np.ndarray, label: np.ndarray, scale_range: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """DeepLab's random scale: both resized by one factor from ``scale_range``; the label NEAREST."""
    factor = float(rng.uniform(*scale_range))
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    scaled_image = np.array(Image.fromarray(image).resize(size, resample=Image.BILINEAR))
    scaled_label = np.array(Image.fromarray(label).resize(size, resample=Image.NEAREST))
    return scaled_image, scaled_label


def check_label(label: np.ndarray, image: np.ndarray, num_classes: int, item: object) -> np.ndarray:
    """An HxW uint8 label map of the image's size with values in 0..num_classes-1 or 255."""
    label = np.asarray(label)
    if label.shape != image.shape[:2]:
        raise BadInputError(item, f"label {label.shape} does not match image {image.shape[:2]}")
    if label.dtype != np.uint8:
        raise BadInputError(item, f"label must be uint8, got {label.dtype}")
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if len(bad):
        raise BadInputError(item, f"label values {bad.tolist()} outside 0..{num_classes - 1} and {IGNORE_INDEX}")
    return label


def _prepare_item(
    item: tuple[np.ndarray, np.ndarray],
    index: int,
    rng: np.random.Generator,
    aug: Augmentation,
    scale_range: tuple[float, float] | None,
    num_classes: int,
) -> tuple[torch.Tensor, np.ndarray]:
    image, label = np.asarray(item[0]), item[1]
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError(f"item {index}", f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    label = check_label(label, image, num_classes, f"item {index}")
    if scale_range is not None:
        image, label = random_scale(image, label, scale_range, rng)
    tensor, label = augment(image, label, aug, rng)  # flip, crop; the label padded with 255
    return tensor, label


def _collate(items: list[tuple[torch.Tensor, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = pad_batch([image for image, _ in items])
    labels = torch.from_numpy(pad_labels([label for _, label in items]).astype(np.int64))
    return images, labels


def _batch_loss(model: SegmentationNet, batch: list[torch.Tensor], amp: bool) -> tuple[torch.Tensor, Any]:
    images, labels = batch
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    with torch.no_grad():
        valid = labels != IGNORE_INDEX
        correct = (logits.argmax(dim=1) == labels) & valid
    return loss, (int(correct.sum()), int(valid.sum()))


def _pixel_accuracy(outputs: list[tuple[int, int]]) -> dict[str, float]:
    correct, valid = (sum(parts) for parts in zip(*outputs))
    return {"pixel_accuracy": correct / valid if valid else float("nan")}


def use_amp(config: SegmentationTrainConfig, device: torch.device) -> bool:
    """bfloat16 autocast when asked for and on a CUDA device that has it (no loss scaling needed)."""
    return bool(config.amp and device.type == "cuda" and torch.cuda.is_bf16_supported())


def train_segmentation(
    model: SegmentationNet,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    config: SegmentationTrainConfig = SegmentationTrainConfig(),
    *,
    device: torch.device | str | None = None,
    checkpoint_path: str | Path | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> SegmentationNet:
    """Train ``model`` on images (HxWx3 uint8) and their labels (HxW uint8, 255 ignored).

    Any sequences (a lazy one reading a workspace will do; with workers it is pickled to
    each, per epoch). Checkpoints after every epoch and resumes from ``checkpoint_path``
    when it holds an unfinished run of the same network and config.
    ``on_epoch_end(epoch, {"loss", "pixel_accuracy"})``: 0-based epoch, training-crop metrics.
    """
    if len(images) != len(labels):
        raise DatasetError(f"{len(images)} images but {len(labels)} label maps")
    if config.backbone != model.arch or config.output_stride != model.output_stride:
        raise ValueError(
            f"config is for {config.backbone} at stride {config.output_stride}, "
            f"the model is {model.arch} at stride {model.output_stride}"
        )
    frozen = use_frozen_batchnorm(config.batchnorm, model.backbone.weights_record.used != "none")
    if min(len(images), config.batch_size) < 2 and not frozen:
        # ASPP's image-pooling branch batch-normalises one value per image and channel.
        raise ValueError(f"training batch norm needs batches of at least 2 images ({len(images)} images, "
                         f"batch size {config.batch_size})")
    device = torch.device(device) if device is not None else default_device()
    amp = use_amp(config, device)
    if config.amp and device.type == "cuda" and not amp:
        logger.warning("this GPU has no bfloat16: training in float32")
    items = AugmentedItems(
        _Pairs(images, labels),
        functools.partial(
            _prepare_item, aug=Augmentation.from_config(config), scale_range=config.scale_range,
            num_classes=model.num_classes,
        ),
        config.seed,
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        fit(
            model.to(device), items, _collate, config, functools.partial(_batch_loss, amp=amp),
            device=device, checkpoint_path=checkpoint_path, on_epoch_end=on_epoch_end,
            summarise=_pixel_accuracy, multiprocessing_context=WORKER_CONTEXT,
        )
    return model.eval()


class _Pairs(torch.utils.data.Dataset):
    """(image, label) by index over two sequences, read only when asked for."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]
