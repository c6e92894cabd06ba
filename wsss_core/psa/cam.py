"""Class activation maps (PSA, Ahn & Kwak 2018): a multi-label classifier and its CAMs.

The classifier is backbone -> last stage -> Dropout2d -> global average pooling -> 1x1
conv without bias. Its CAMs are that 1x1 conv applied to the last-stage map, ReLU'd.
Shared by both methods: the AffinityNet path trains it on image tags; the GraphNet path
reads its CAMs for box seeds and its backbone as the offline feature fallback. Its
training loop is wsss_core.training's, which AffinityNet shares.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from wsss_core.backbones import build_backbone, default_device, normalise_images
from wsss_core.checkpoints import read_checkpoint
from wsss_core.errors import BadInputError
from wsss_core.training import (
    Augmentation,
    AugmentedItems,
    EpochCallback,
    TrainConfig,
    augment,
    fit,
    mean_average_precision,
    pad_batch,
)

logger = logging.getLogger(__name__)

NORMALISATION_EPS = 1e-5  # PSA infer_cls.py: cam / (max + 1e-5)


# ----------------------------------------------------------------------------- model


class CamNet(nn.Module):
    """Multi-label classifier over ``num_classes`` foreground classes; output c-1 is class c."""

    def __init__(
        self, backbone_name: str, num_classes: int, weights: str | Path | None = None, dropout: float = 0.5
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = build_backbone(backbone_name, weights)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(self.backbone.channels[-1], num_classes, kernel_size=1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        self.backbone_name = backbone_name
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,H,W) -> class logits (B, num_classes)."""
        features = self.dropout(self.backbone(x)[-1])
        pooled = features.mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,H,W) -> ReLU'd CAMs (B, num_classes, ceil(H/8), ceil(W/8))."""
        return F.relu(F.conv2d(self.backbone(x)[-1], self.classifier.weight))

    def head_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"kind": "CamNet", "backbone": self.backbone_name, "num_classes": self.num_classes}


def load_camnet(path: str | Path, device: torch.device | str = "cpu") -> CamNet:
    """A trained CamNet from a checkpoint written by ``train_cam_classifier``."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("meta", {})
    if meta.get("kind") != "CamNet":
        raise BadInputError(path, f"not a CamNet checkpoint (kind {meta.get('kind')!r})")
    model = CamNet(meta["backbone"], int(meta["num_classes"]), weights=None)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CamTrainConfig(TrainConfig):
    """PSA's classifier training (train_cls.py): 15 epochs, batch 16, rescale 448-768, crop 448."""

    dropout: float = 0.5

    @classmethod
    def small(cls) -> CamTrainConfig:
        """200 images of ~256x192 on 2 CPU cores, from scratch (weights none).

        Images rescaled to a long side of 160-224 and cropped to 128 (the dilated
        stride-8 ResNet-18 costs ~5x a plain one). Measured on 200 synthetic images:
        ~30 s an epoch on one free core; lr 0.01 with momentum 0.9 learns (0.005 about
        the same, 0.02 slower, 0.05 diverged); crops of 96 gave CAMs ~5 mIoU points worse.
        """
        return cls(
            backbone="resnet18",
            weights=None,
            epochs=10,
            batch_size=16,
            lr=0.01,
            momentum=0.9,
            crop_size=128,
            rescale_long_side=(160, 224),
            dropout=0.0,
            batchnorm="train",
        )


# ----------------------------------------------------------------------------- CAM training


def tags_to_targets(tags: Sequence[int], num_classes: int, item: object) -> np.ndarray:
    """Dataset tags (foreground classes 1..C) -> multi-hot (C,) float32, class c at c-1."""
    targets = np.zeros(num_classes, dtype=np.float32)
    for tag in tags:
        if not 1 <= int(tag) <= num_classes:
            raise BadInputError(item, f"tag {tag} outside the foreground classes 1..{num_classes}")
        targets[int(tag) - 1] = 1.0
    return targets


def _prepare_cam_item(
    item: tuple[np.ndarray, Sequence[int]],
    index: int,
    rng: np.random.Generator,
    aug: Augmentation,
    num_classes: int,
) -> tuple[torch.Tensor, np.ndarray]:
    image, tags = item
    return augment(np.asarray(image), None, aug, rng)[0], tags_to_targets(tags, num_classes, f"item {index}")


def _collate_cam(items: list[tuple[torch.Tensor, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_batch([image for image, _ in items]), torch.from_numpy(np.stack([t for _, t in items]))


def _cam_batch_loss(model: CamNet, batch: list[torch.Tensor]) -> tuple[torch.Tensor, Any]:
    images, targets = batch
    logits = model(images)
    loss = F.multilabel_soft_margin_loss(logits, targets)
    return loss, (logits.detach().cpu().numpy(), targets.cpu().numpy())


def _cam_metrics(outputs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    scores, targets = (np.concatenate(parts) for parts in zip(*outputs))
    return {"mAP": mean_average_precision(scores, targets)}


def train_cam_classifier(
    dataset: torch.utils.data.Dataset,
    num_classes: int,
    config: CamTrainConfig = CamTrainConfig(),
    *,
    device: torch.device | str | None = None,
    checkpoint_path: str | Path | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> CamNet:
    """Train the CAM classifier on (image HxWx3 uint8, tags) items; resumes from ``checkpoint_path``.

    Checkpoints after every epoch. ``on_epoch_end(epoch, {"loss", "mAP"})`` gets the
    0-based epoch, the mean loss and the mAP of the epoch's training predictions.
    """
    device = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        model = CamNet(config.backbone, num_classes, config.weights, config.dropout).to(device)
        aug = Augmentation.from_config(config)
        prepare = functools.partial(_prepare_cam_item, aug=aug, num_classes=num_classes)
        items = AugmentedItems(dataset, prepare, config.seed)
        fit(
            model, items, _collate_cam, config, _cam_batch_loss,
            device=device, checkpoint_path=checkpoint_path, on_epoch_end=on_epoch_end, summarise=_cam_metrics,
        )
    return model.eval()


# ----------------------------------------------------------------------------- inference


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """PIL bicubic resize by ``scale`` (sizes rounded), as PSA's multi-scale inference."""
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.array(Image.fromarray(image).resize(size, resample=Image.BICUBIC))


def infer_cams(
    model: CamNet,
    image: np.ndarray,
    tags: Sequence[int],
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """PSA's multi-scale + flip CAMs of the tag classes: (len(tags), H, W) float32, each max ~1.

    Each scale's ReLU'd CAMs are upsampled to the image size and summed; each class is
    then divided by its maximum + 1e-5.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError("image", f"expected HxWx3 uint8, got {image.shape} {image.dtype}")
    channels = [int(t) - 1 for t in tags]
    if any(not 0 <= c < model.num_classes for c in channels):
        raise BadInputError("tags", f"tags {list(tags)} outside classes 1..{model.num_classes}")
    height, width = image.shape[:2]
    total = torch.zeros((len(channels), height, width), device=device)
    if not channels:
        return total.cpu().numpy()
    model = model.to(device).eval()
    with torch.inference_mode():
        for scale in scales:
            scaled = resize_image(image, scale)
            batch = np.stack([scaled, scaled[:, ::-1]]) if flip else scaled[None]
            cams = model.cams(normalise_images(batch, device))[:, channels]
            cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
            total += cams[0]
            if flip:
                total += cams[1].flip(-1)
    peak = total.flatten(1).max(dim=1).values.view(-1, 1, 1)
    return (total / (peak + NORMALISATION_EPS)).cpu().numpy().astype(np.float32)

