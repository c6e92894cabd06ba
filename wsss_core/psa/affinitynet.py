"""AffinityNet (PSA, Ahn & Kwak 2018): features whose L1 distances give pixel affinities.

The last three backbone stages are each reduced by a 1x1 conv (+ GroupNorm, as PSA's
VGG-16 head; its ResNet-38 head has none) and ELU, concatenated, and mixed by a 1x1
conv + ELU into the feature map f; a_ij = exp(-mean_c |f_i - f_j|) for the pairs of
``wsss_core.psa.affinity.neighbour_offsets``. Labels, pairs and loss live in ``affinity``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss_core.psa.affinity import affinities_from_features, affinity_loss, downsample_labels, pair_labels
from wsss_core.backbones import WeightsRecord, build_backbone, default_device, normalise_images
from wsss_core.psa.cam import CamNet
from wsss_core.training import (
    Augmentation,
    AugmentedItems,
    EpochCallback,
    TrainConfig,
    augment,
    fit,
    pad_batch,
)
from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.checkpoints import read_checkpoint
from wsss_core.errors import BadInputError

FEATURE_STRIDE = 8
GROUP_NORM_CHANNELS = 8  # PSA: GroupNorm(8, 64), (16, 128), (32, 256)


class AffinityNet(nn.Module):
    """Backbone + PSA's affinity head; ``forward`` gives the feature map f (B, sum(head_dims), h, w)."""

    def __init__(
        self,
        backbone_name: str,
        weights: str | Path | None = None,
        head_dims: tuple[int, int, int] = (64, 128, 256),
        head_norm: bool = True,
        radius: int = 5,
    ):
        super().__init__()
        if head_norm and any(d % GROUP_NORM_CHANNELS for d in head_dims):
            raise ValueError(f"head_dims must be multiples of {GROUP_NORM_CHANNELS} for GroupNorm: {head_dims}")
        self.backbone = build_backbone(backbone_name, weights)
        self.reducers = nn.ModuleList(
            nn.Conv2d(c, d, kernel_size=1, bias=False) for c, d in zip(self.backbone.channels, head_dims)
        )
        self.norms = nn.ModuleList(
            nn.GroupNorm(d // GROUP_NORM_CHANNELS, d) if head_norm else nn.Identity() for d in head_dims
        )
        total = sum(head_dims)
        self.fuse = nn.Conv2d(total, total, kernel_size=1, bias=False)
        for reducer in self.reducers:
            nn.init.kaiming_normal_(reducer.weight)
        nn.init.xavier_uniform_(self.fuse.weight, gain=4)  # PSA's init
        self.backbone_name = backbone_name
        self.head_dims = tuple(head_dims)
        self.head_norm = head_norm
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,H,W) -> features f (B, D, ceil(H/8), ceil(W/8))."""
        stages = self.backbone(x)
        reduced = [F.elu(norm(reducer(s))) for s, reducer, norm in zip(stages, self.reducers, self.norms)]
        return F.elu(self.fuse(torch.cat(reduced, dim=1)))

    def affinities(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> (B, P, h, w) affinities in (0, 1]; 0 where the partner is outside."""
        return affinities_from_features(self(x), self.radius)

    def head_modules(self) -> list[nn.Module]:
        return [self.reducers, self.norms, self.fuse]

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "kind": "AffinityNet",
            "backbone": self.backbone_name,
            "head_dims": list(self.head_dims),
            "head_norm": self.head_norm,
            "radius": self.radius,
        }


def load_affinitynet(path: str | Path, device: torch.device | str = "cpu") -> AffinityNet:
    """A trained AffinityNet from a checkpoint written by ``train_affinitynet``."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("meta", {})
    if meta.get("kind") != "AffinityNet":
        raise BadInputError(path, f"not an AffinityNet checkpoint (kind {meta.get('kind')!r})")
    head_dims = tuple(meta["head_dims"])
    model = AffinityNet(meta["backbone"], None, head_dims, bool(meta["head_norm"]), int(meta["radius"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


@dataclass(frozen=True)
class AffinityTrainConfig(TrainConfig):
    """PSA's AffinityNet training (train_aff.py): 8 epochs, batch 8, crop 448, poly SGD lr 0.1.

    No rescaling (PSA only crops, flips and jitters here). Optimiser notes: TrainConfig.
    head_dims: official code 64/128/256 (448 features); the paper says 128/256/512.
    """

    epochs: int = 8
    batch_size: int = 8
    rescale_long_side: tuple[int, int] | None = None
    head_dims: tuple[int, int, int] = (64, 128, 256)
    head_norm: bool = True
    radius: int = 5

    @classmethod
    def small(cls) -> AffinityTrainConfig:
        """200 images of ~256x192 on 2 CPU cores, from scratch or from ``CamTrainConfig.small()``'s net.

        PSA's optimiser (lr 0.1, no momentum) lowered the loss fastest in a tiny sweep
        (0.003-0.03 with momentum 0.9 were slower). Measured on 200 synthetic images with
        ground-truth labels: ~22 s an epoch on one free core, loss 0.63 -> 0.22 in 8 epochs.
        """
        return cls(backbone="resnet18", weights=None, epochs=8, batch_size=8, crop_size=96, batchnorm="train")


def initialise_from_camnet(model: AffinityNet, source: CamNet | str | Path) -> None:
    """Copy a trained CamNet's backbone weights (object or checkpoint path) into ``model``."""
    if isinstance(source, CamNet):
        backbone_name, state, label = source.backbone_name, source.backbone.state_dict(), "CamNet object"
    else:
        checkpoint = read_checkpoint(source)
        meta = checkpoint.get("meta", {})
        if meta.get("kind") != "CamNet":
            raise BadInputError(source, f"not a CamNet checkpoint (kind {meta.get('kind')!r})")
        backbone_name, label = meta["backbone"], str(source)
        prefix = "backbone."
        state = {k.removeprefix(prefix): v for k, v in checkpoint["model"].items() if k.startswith(prefix)}
    if backbone_name != model.backbone_name:
        raise BadInputError(label, f"CamNet backbone {backbone_name} differs from {model.backbone_name}")
    model.backbone.load_state_dict(state)
    model.backbone.weights_record = WeightsRecord(label, f"camnet:{label}", "backbone of a trained CamNet")


def pad_labels(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Stack (H,W) label maps, padding bottom/right with 255 to the largest size."""
    height = max(label.shape[0] for label in labels)
    width = max(label.shape[1] for label in labels)
    batch = np.full((len(labels), height, width), IGNORE_INDEX, dtype=np.uint8)
    for i, label in enumerate(labels):
        batch[i, : label.shape[0], : label.shape[1]] = label
    return batch


def batch_pair_labels(labels: np.ndarray, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-resolution (B,H,W) labels -> stride-8 pair labels, three (B,P,h,w) tensors."""
    per_item = [pair_labels(downsample_labels(label, FEATURE_STRIDE), radius) for label in labels]
    bg_pos, fg_pos, neg = (torch.from_numpy(np.stack([item[k] for item in per_item])) for k in range(3))
    return bg_pos, fg_pos, neg


def _prepare_affinity_item(
    item: tuple[np.ndarray, np.ndarray], index: int, rng: np.random.Generator, aug: Augmentation
) -> tuple[torch.Tensor, np.ndarray]:
    image, label = (np.asarray(a) for a in item)
    if label.shape != image.shape[:2]:
        raise BadInputError(f"item {index}", f"label {label.shape} != image {image.shape[:2]}")
    image_tensor, label = augment(image, label.astype(np.uint8), aug, rng)
    return image_tensor, label


def _collate_affinity(items: list[tuple[torch.Tensor, np.ndarray]], radius: int) -> tuple[torch.Tensor, ...]:
    images = pad_batch([image for image, _ in items])
    return (images, *batch_pair_labels(pad_labels([label for _, label in items]), radius))


def _affinity_batch_loss(model: AffinityNet, batch: list[torch.Tensor]) -> tuple[torch.Tensor, None]:
    images, bg_pos, fg_pos, neg = batch
    return affinity_loss(model.affinities(images), bg_pos, fg_pos, neg), None


def train_affinitynet(
    dataset: torch.utils.data.Dataset,
    config: AffinityTrainConfig = AffinityTrainConfig(),
    *,
    device: torch.device | str | None = None,
    checkpoint_path: str | Path | None = None,
    on_epoch_end: EpochCallback | None = None,
    init_from: CamNet | str | Path | None = None,
) -> AffinityNet:
    """Train on (image HxWx3 uint8, label map HxW: 0 bg, c class, 255 neutral) items.

    Image and labels are cropped / flipped together, then the labels go to stride 8
    (block majority) and become pair labels; loss = PSA's affinity loss. Checkpoints
    every epoch and resumes from ``checkpoint_path``; ``on_epoch_end(epoch, {"loss"})``.
    ``init_from``: a trained CamNet (or its checkpoint) whose backbone starts the training.
    """
    device = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        weights = None if init_from is not None else config.weights
        model = AffinityNet(config.backbone, weights, config.head_dims, config.head_norm, config.radius)
        if init_from is not None:
            initialise_from_camnet(model, init_from)
        model = model.to(device)
        prepare = functools.partial(_prepare_affinity_item, aug=Augmentation.from_config(config))
        items = AugmentedItems(dataset, prepare, config.seed)
        collate = functools.partial(_collate_affinity, radius=config.radius)
        fit(
            model, items, collate, config, _affinity_batch_loss,
            device=device, checkpoint_path=checkpoint_path, on_epoch_end=on_epoch_end,
        )
    return model.eval()


def predict_affinities(
    model: AffinityNet,
    image: np.ndarray,
    device: torch.device | str | None = None,
    stride: Literal[4, 8] = 8,
) -> np.ndarray:
    """(P, ceil(H/stride), ceil(W/stride)) float32 affinities of one uncropped image.

    stride 4 upsamples the stride-8 features bilinearly before taking affinities (the
    radius then spans half the image distance); feeding a 2x image is the alternative.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError("image", f"expected HxWx3 uint8, got {image.shape} {image.dtype}")
    if stride not in (4, 8):
        raise ValueError(f"stride must be 4 or 8, got {stride}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    height, width = image.shape[:2]
    with torch.inference_mode():
        features = model(normalise_images(image, device))
        if stride == 4:
            size = (-(-height // 4), -(-width // 4))
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
        aff = affinities_from_features(features, model.radius)[0]
    return aff.float().cpu().numpy()
