"""The configs of GraphNet's two network stages, CNN features and the GCN, apart from their
torch code: resolving a GraphNet config (every graphnet and superpixels flow, also one that
finds nothing to do) then does not load torch (~2 s of a command's start on the 2-core
machine). features.py and gcn.py import them from here, so either name still works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FeatureConfig:
    """CNN features per superpixel (GraphNet: VGG-16 relu5_3, mean pooling)."""

    backbone: str = "vgg16"
    weights: str | None = "DEFAULT"
    pooling: Literal["mean", "max"] = "mean"
    add_colour: bool = False  # mean and std of Lab colour (6 values)
    add_position: bool = False  # centroid y/H, x/W (2 values)
    add_texture: bool = False  # gradient / LoG statistics and LBP histogram (22 values)
    batch_size: int = 8



@dataclass(frozen=True)
class GCNConfig:
    """Kipf & Welling's defaults (Adam, weight decay on the first layer only).

    The GraphNet review gives no GCN hyper-parameters, so these are Kipf's: hidden 16,
    200 epochs, lr 0.01, dropout 0.5, weight decay 5e-4.
    """

    hidden: int = 16
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    dropout: float = 0.5
    seed: int = 0
    hops: int = 1  # Â applied this many times per layer: 1 = Kipf; more reaches nodes far from the seeds
    pretrain_epochs: int = 0  # > 0: first fit one shared GCN on every image's seeds (see module doc)
    pretrain_lr: float = 0.01
    pretrain_images_per_step: int = 64  # images per block-diagonal graph of one pretraining step

    def __post_init__(self) -> None:
        if self.hops < 1:
            raise ValueError(f"hops must be >= 1, got {self.hops}")
        if self.epochs < 0 or self.pretrain_epochs < 0 or self.pretrain_images_per_step < 1:
            raise ValueError("epochs and pretrain_epochs must be >= 0, pretrain_images_per_step >= 1")
