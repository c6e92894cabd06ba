"""The AffinityNet (PSA) path's configuration: its stage configs, presets and how a run's config is resolved.

Stages (one Zarr group each) and what they hold:

    train-cam           models/cam/model.pt (CamNet checkpoint; also the GraphNet path's offline features)
    cams/<id>/{scores,classes}   float16 (K, H, W) max-normalised CAMs of the K tag classes, int32 (K,)
    pseudo/cam/<id>     uint8 HxW: argmax of [fixed background score, CAMs]
    affinity-labels/<id>         uint8 HxW confident labels: 0 bg, c class, 255 neutral (alpha 4 / 32 + dCRF)
    train-affinitynet   models/affinitynet/model.pt
    rw/<id>/{scores,classes}     float32 (K+1, h, w) random-walk scores on the stride grid (channel 0 background)
    pseudo/rw/<id>, pseudo/rw-crf/<id>   uint8 HxW: argmax of the walked scores (after a dense CRF)

How the masks are read off the scores is wsss_core/psa/masks.py. Prefect-free: the flow
(flows/affinitynet.py) and the tasks (tasks/affinitynet.py) wire these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from wsss_core.psa.affinity import AffinityConfig
from wsss_core.psa.affinitynet import AffinityTrainConfig
from wsss_core.psa.cam import CamTrainConfig
from wsss_core.config import apply_overrides
from wsss_core.crf import CRFConfig
from wsss_core.errors import BadInputError
from wsss_core.psa.masks import CamMaskConfig, RwMaskConfig
from wsss_core.psa.random_walk import RandomWalkConfig
from wsss_core.registries import BACKBONES, PSA_PRESETS, choose_sized_preset
from wsss_core.weights import resolve_pretrained


PAPER_MIN_IMAGES = 1000  # "auto" picks the paper's schedule from this many images on, with a GPU


@dataclass(frozen=True)
class CamInferenceConfig:
    """PSA infer_cls.py: scales 1, 0.5, 1.5, 2 and horizontal flips, summed, per-class max-normalised.

    ``small()``: scales 1 and 2, no flip -- a third of the cost (measured on a ResNet-18 CAM
    classifier from scratch, 40 images of 256x192, one thread: 0.9 s against 2.7 s an
    image). The 2x scale carries most of what multi-scale adds on stride-8 CAMs of small
    images; pseudo/cam mIoU (background score 0.45) on two datasets: built-in 64.2 vs 65.3
    with PSA's, a `wild` seed 23.8 vs 24.4 (scale 1 + flip alone: 58.7 on the built-in).
    """

    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True

    @classmethod
    def small(cls) -> CamInferenceConfig:
        return cls(scales=(1.0, 2.0), flip=False)


@dataclass(frozen=True)
class AffinityNetPathConfig:
    """Every stage config of the AffinityNet path. The defaults are PSA's (``paper()``).

    affinity_init: "weights" starts AffinityNet from ``affinity_train.weights`` (PSA:
    ImageNet); "cam" from the trained CAM classifier's backbone (needs the same backbone).
    rw_crf: the dense CRF applied to the walked scores (normalised to sum 1 per pixel).
    """

    cam_train: CamTrainConfig = CamTrainConfig()
    cam_inference: CamInferenceConfig = CamInferenceConfig()
    cam_mask: CamMaskConfig = CamMaskConfig()
    affinity_labels: AffinityConfig = AffinityConfig()
    affinity_train: AffinityTrainConfig = AffinityTrainConfig()
    affinity_init: Literal["weights", "cam"] = "weights"
    random_walk: RandomWalkConfig = RandomWalkConfig()
    rw_crf: CRFConfig = field(default_factory=CRFConfig)
    rw_mask: RwMaskConfig = RwMaskConfig()

    @classmethod
    def paper(cls) -> AffinityNetPathConfig:
        """PSA's schedule: ResNet-50 from ImageNet weights, crops of 448, 15 + 8 epochs."""
        return cls()

    @classmethod
    def small(cls) -> AffinityNetPathConfig:
        """A few hundred small images (~256x192) on a 2-core CPU, without pretrained weights.

        ResNet-18 from scratch, CamTrainConfig.small(), CamInferenceConfig.small() (scales 1
        and 2, no flip) and AffinityTrainConfig.small();
        AffinityNet starts from the CAM classifier's backbone (no ImageNet weights to
        start from). These from-scratch CAMs are wide, so pseudo/cam is best with a
        background score of 0.45 (built-in dataset: 0.2: 47.0, 0.3: 55.8, 0.45: 61.7, 0.6:
        56.4 mIoU) and the walk is short with a strong background: power 1, PSA's beta 8,
        2^4 steps. Chosen on four generated datasets (the built-in one and `wild` seeds 1,
        11, 14) as the walk whose worst gain over pseudo/cam is largest: +11.1 / +1.4 /
        +2.2 / +4.5 points. The walk tuned on the built-in set alone before (beta 12, power
        2, 2^7 steps) gave +10.4 / +0.4 / +5.2 / -0.6, PSA's (beta 8, power 16, 2^8 steps)
        -9.0 / -9.1 / -1.6 / -17.4: from-scratch affinities leak over long walks, and the
        wider a dataset's CAMs, the stronger the background must be
        (benchmarks/walk_params.py).
        """
        return cls(
            cam_train=CamTrainConfig.small(),
            cam_inference=CamInferenceConfig.small(),
            cam_mask=CamMaskConfig(background_score=0.45),
            affinity_train=AffinityTrainConfig.small(),
            affinity_init="cam",
            random_walk=RandomWalkConfig(beta=8.0, log_t=4, background_power=1.0),
        )

    def with_backbone(self, backbone: str | None, weights: str | None) -> AffinityNetPathConfig:
        """Both networks on ``backbone`` (None: keep) with ``weights`` (None: keep)."""
        cam, aff = self.cam_train, self.affinity_train
        if backbone is not None:
            cam, aff = replace(cam, backbone=backbone), replace(aff, backbone=backbone)
        if weights is not None:
            cam, aff = replace(cam, weights=weights), replace(aff, weights=weights)
        return replace(self, cam_train=cam, affinity_train=aff)

    def with_stride(self, stride: int) -> AffinityNetPathConfig:
        if stride not in (4, 8):
            raise ValueError(f"random-walk stride must be 4 or 8, got {stride}")
        return replace(self, random_walk=replace(self.random_walk, stride=stride))


@dataclass(frozen=True)
class ResolvedConfig:
    """The config an AffinityNet run uses, the preset it came from and why, and the weights records."""

    config: AffinityNetPathConfig
    preset: str
    why: str
    weights: dict[str, dict[str, Any]]


def choose_preset(preset: str, n_images: int, has_gpu: bool) -> tuple[str, str]:
    """(preset name, why): "auto" is "paper" from PAPER_MIN_IMAGES images with a GPU, else "small"."""
    return choose_sized_preset(PSA_PRESETS, preset, n_images, has_gpu, PAPER_MIN_IMAGES)


def resolve_config(
    preset: str,
    n_images: int,
    has_gpu: bool,
    backbone: str | None = None,
    weights: str | None = None,
    stride: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ResolvedConfig:
    """The run's config: a preset ("auto": by data size and GPU), --backbone / --weights /
    --stride, any overrides by name; then the pretrained weights load-tested (resolve_weights)."""
    name, why = choose_preset(preset, n_images, has_gpu)
    config = PSA_PRESETS.get(name)()
    config = config.with_backbone(BACKBONES.check(backbone) if backbone else None, weights)
    if stride is not None:
        config = config.with_stride(stride)
    config, records = resolve_weights(apply_overrides(config, overrides, "affinitynet"))
    return ResolvedConfig(config, name, why, records)


def resolve_weights(config: AffinityNetPathConfig) -> tuple[AffinityNetPathConfig, dict[str, dict[str, Any]]]:
    """Both networks' weights load-tested (wsss_core.weights); a fallback trains from random init.

    Returns the config the networks really train with and, per network, what was asked
    for, what is used and why (logged with every training run).
    """
    records: dict[str, dict[str, Any]] = {}
    cam = resolve_pretrained("cam", config.cam_train.backbone, config.cam_train.weights)
    config = replace(config, cam_train=replace(config.cam_train, weights=cam.weights))
    records["cam"] = cam.record()
    if config.affinity_init == "weights":
        aff = resolve_pretrained("affinitynet", config.affinity_train.backbone, config.affinity_train.weights)
        config = replace(config, affinity_train=replace(config.affinity_train, weights=aff.weights))
        records["affinitynet"] = aff.record()
    else:
        records["affinitynet"] = {"requested": "cam", "weights": "backbone of the trained CAM classifier", "fallback": False}
    return config, records


def check_tags(tags: np.ndarray, num_classes: int, item: object) -> np.ndarray:
    """Distinct foreground classes 1..num_classes as int64 (K,); BadInputError otherwise."""
    tags = np.asarray(tags).astype(np.int64).ravel()
    if np.any(tags < 1) or np.any(tags > num_classes) or len(np.unique(tags)) != len(tags):
        raise BadInputError(item, f"tags {tags.tolist()} are not distinct foreground classes 1..{num_classes}")
    return tags


def run_settings(resolved: ResolvedConfig, crf: bool) -> dict[str, Any]:
    """What an AffinityNet run is, as a person reads it (MLflow params): preset, backbones,
    weights (requested and used, per network), the walk's beta and steps, then every config
    section by the names `--set` takes."""
    from wsss_core.config import config_to_dict

    config = config_to_dict(resolved.config)
    if not crf:
        config.pop("rw_crf")
    weights = {
        network: {k: v for k, v in record.items() if k in ("requested", "used", "weights", "fallback")}
        for network, record in resolved.weights.items()
    }
    walk = resolved.config.random_walk
    return {
        "path": "affinitynet", "supervision": "tags", "preset": resolved.preset, "crf": crf,
        "backbone": resolved.config.cam_train.backbone, "weights": weights,
        "walk": {"beta": walk.beta, "steps": walk.steps}, **config,
    }
