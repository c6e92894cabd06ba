"""The segmentation rounds' configuration: one round's training and prediction.

A round trains DeepLabV3 on a label set (pseudo masks, uint8 HxW, 255 = ignore) of the
train split, then predicts every image to make the next round's labels. How many rounds
is the flow's choice, not a config value. Prefect-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wsss_core.config import apply_overrides
from wsss_core.crf import CRFConfig
from wsss_core.registries import SEGMENTATION_ARCHS, SEGMENTATION_PRESETS, choose_sized_preset
from wsss_core.training import BatchNormMode, TrainConfig
from wsss_core.weights import WeightsChoice

PAPER_MIN_IMAGES = 1000  # "auto" picks the paper's schedule from this many images on, with a GPU (as PSA's)


@dataclass(frozen=True)
class SegmentationTrainConfig(TrainConfig):
    """DeepLabV3's VOC training (Chen et al. 2017): poly SGD lr 0.007, momentum 0.9, weight
    decay 1e-4, batch 16, crops of 513, random scale 0.5-2 and flips, batch norm trained.

    backbone: the network, a SEGMENTATION_ARCHS name (e.g. deeplabv3_resnet50); weights:
    its backbone's (ImageNet) weights, resolved by ``resolve_segmentation_weights``.
    epochs 45: DeepLabV3's 30k iterations of 16 on VOC's 10,582 train_aug images; as
    epochs, the schedule scales with the dataset. No x10 head lr (DeepLabV3 has none; the
    DeepLabv2 of the WSSS papers does). amp: bfloat16 autocast, used on CUDA only.
    """

    backbone: str = "deeplabv3_resnet50"
    weights: str | None = "DEFAULT"
    output_stride: int = 16
    epochs: int = 45
    batch_size: int = 16
    lr: float = 0.007
    head_lr_multiplier: float = 1.0
    bias_lr_multiplier: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    crop_size: int | None = 513
    rescale_long_side: tuple[int, int] | None = None  # DeepLab rescales by a factor: scale_range
    scale_range: tuple[float, float] | None = (0.5, 2.0)
    colour_jitter: tuple[float, float, float, float] | None = None
    batchnorm: BatchNormMode = "train"  # DeepLabV3 fine-tunes batch norm (batch 16 at stride 16)
    amp: bool = True

    def __post_init__(self) -> None:
        arch = SEGMENTATION_ARCHS.get(self.backbone)
        if self.output_stride not in arch.strides:
            raise ValueError(f"{self.backbone} supports output stride {arch.strides}, not {self.output_stride}")
        if self.scale_range is not None and not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")

    @classmethod
    def small(cls) -> SegmentationTrainConfig:
        """~200 images of ~256x192 on 2 CPU cores.

        ResNet-18 DeepLabV3 at stride 16 (not in torchvision; built here), because its
        backbone is the small AffinityNet preset's CAM classifier, the only trained
        backbone there is offline. Crops of 160 from scale 0.5-1.5, batch 8, 10 epochs.
        Measured (benchmarks/segmentation.py, results/segmentation.json) from random init
        on 160 synthetic 256x192 images with ground-truth labels, mIoU of 40 held-out
        images: lr 0.02 72.4, 0.01 69.9; MobileNetV3-Large at lr 0.01 12.0 (all
        background: its batch norm momentum 0.01 leaves the running statistics far from
        converged after 200 steps). ~10 training images/s on 2 shared CPU cores.
        """
        return cls(
            backbone="deeplabv3_resnet18",
            epochs=10,
            batch_size=8,
            lr=0.02,
            crop_size=160,
            scale_range=(0.5, 1.5),
        )


@dataclass(frozen=True)
class SegmentationInferenceConfig:
    """How a round predicts its labels: softmax averaged over scales (and flips), dense CRF, argmax.

    paper: DeepLabV3's multi-scale + flip evaluation (scales 0.5-1.75), then the dense CRF
    the WSSS papers refine their labels with (wsss_core.crf, PSA's parameters).
    label_classes_only: an image with previous labels (its pseudo masks, or the last
    round's) keeps to the classes they hold (background always): its weak labels named
    them, so a class they left out is not there. Measured on the built-in dataset (160
    train images, small preset, round 1 of gcn-scribbles): train-split labels 79.0 mIoU
    plain, 83.8 kept to the label classes, 89.0 with the CRF, 94.9 with both (round 0: 93.8).
    label_odds: the previous labels weigh each pixel: the network overrules a pixel's label
    only where it finds another class more than this many times as likely
    (segmentation.predict.weigh_by_labels); None: the network alone decides. A small
    network trained on a few dozen images is worse than its labels on the images it did
    not train on; this keeps what the labels gave and lets the network change what it is
    sure of. Neither is in the papers; an image without previous labels (not in the
    dataset's weak labels) gets the plain prediction.
    """

    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    flip: bool = True
    crf: bool = True
    crf_config: CRFConfig = field(default_factory=CRFConfig)
    label_classes_only: bool = False
    label_odds: float | None = None

    def __post_init__(self) -> None:
        if self.label_odds is not None and self.label_odds < 1:
            raise ValueError(f"label_odds must be at least 1 (1: the labels weigh nothing), got {self.label_odds}")


@dataclass(frozen=True)
class SegmentationConfig:
    """A round's training and prediction. The defaults are the papers' (``paper()``)."""

    train: SegmentationTrainConfig = SegmentationTrainConfig()
    inference: SegmentationInferenceConfig = SegmentationInferenceConfig()

    @classmethod
    def paper(cls) -> SegmentationConfig:
        return cls()

    @classmethod
    def small(cls) -> SegmentationConfig:
        """SegmentationTrainConfig.small(); one scale with flips, the dense CRF, and an image's
        previous labels kept to and weighed at odds 64 (see SegmentationInferenceConfig).

        Odds 64: the network overrules a label only where it is about 98 % sure in a two-way
        choice. Chosen on the demo (benchmarks/round_labels.py, round 1, train / val mIoU;
        labels 95.0 / 91.8 from boxes and 92.3 / 89.6 from scribbles): val rose with the odds,
        8 91.0 and 89.9, 32 93.5 and 91.3, 64 93.8 and 91.8 (the largest tried); the network
        alone 63.0 / 58.4 and 63.4 / 60.9. A from-scratch network on a few dozen images is far
        from its labels; never-tuned sets in docs/results.md ("Rounds that keep what their
        labels gave").
        """
        return cls(
            train=SegmentationTrainConfig.small(),
            inference=SegmentationInferenceConfig(
                scales=(1.0,), flip=True, crf=True, label_classes_only=True, label_odds=64.0
            ),
        )


@dataclass(frozen=True)
class ResolvedSegmentationConfig:
    """The config a round uses, the preset it came from and why, and the backbone weights it starts from."""

    config: SegmentationConfig
    preset: str
    why: str
    weights: WeightsChoice

    def weights_record(self) -> dict[str, Any]:
        return self.weights.record()


def choose_preset(preset: str, n_images: int, has_gpu: bool) -> tuple[str, str]:
    """(preset name, why): "auto" is "paper" from PAPER_MIN_IMAGES images with a GPU, else "small"."""
    return choose_sized_preset(SEGMENTATION_PRESETS, preset, n_images, has_gpu, PAPER_MIN_IMAGES)


def resolve_config(
    preset: str,
    n_images: int,
    has_gpu: bool,
    overrides: Mapping[str, Any] | None = None,
    fallback_checkpoint: str | Path | None = None,
) -> ResolvedSegmentationConfig:
    """The round's config: a preset ("auto": by data size and GPU), overrides by name
    ({"train.epochs": 3}), then the backbone weights load-tested. Offline, a pipeline
    checkpoint at ``fallback_checkpoint`` (the CAM classifier) starts the backbone when it
    fits; otherwise random init. The config's weights become what is really used."""
    from wsss_core.segmentation.model import resolve_segmentation_weights

    name, why = choose_preset(preset, n_images, has_gpu)
    config = apply_overrides(SEGMENTATION_PRESETS.get(name)(), overrides, "segmentation")
    choice = resolve_segmentation_weights(config.train.backbone, config.train.weights, fallback_checkpoint)
    config = replace(config, train=replace(config.train, weights=choice.weights))
    return ResolvedSegmentationConfig(config, name, why, choice)
