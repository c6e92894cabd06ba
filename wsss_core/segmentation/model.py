"""DeepLabV3 (torchvision) at output stride 8 or 16, and where its backbone weights come from.

The papers' rounds use DeepLabv2 (VGG-16 / ResNet-101, ASPP without image pooling);
torchvision has no DeepLabv2, so its DeepLabV3 stands in. The networks are assembled
from torchvision's own parts (``IntermediateLayerGetter`` + ``DeepLabHead``) instead of
``deeplabv3_resnet50()`` because that builder fixes the output stride at 8; the module
names are torchvision's (``backbone.*``, ``classifier.*``), so its state dicts fit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss_core.backbones import _dilate_basic_layer
from wsss_core.checkpoints import read_checkpoint
from wsss_core.errors import BadInputError, UsageError
from wsss_core.registries import BACKBONES, SEGMENTATION_ARCHS
from wsss_core.weights import WeightsChoice, WeightsRecord, fallback_level, no_weights, resolve_pretrained, resolve_weights

logger = logging.getLogger(__name__)

NETWORK = "segmentation"  # the network name in weights records
# DeepLabV3's ASPP rates: (6, 12, 18) at output stride 16, doubled at 8. torchvision's
# DeepLabHead uses (12, 24, 36) whatever the stride (also for its stride-16 MobileNet).
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
LEFTOVER_PREFIXES = ("fc.", "classifier.")  # classification heads of torchvision backbones


class SegmentationNet(nn.Module):
    """DeepLabV3: ``forward(normalised images (B,3,H,W)) -> logits (B, num_classes, H, W)``.

    Random init; ``build_segmentation_model`` loads backbone weights. ``backbone.weights_record``
    says what it started from (wsss_core.training.fit freezes batch norm on it in "auto").
    """

    def __init__(self, arch: str, num_classes: int, output_stride: int = 16):
        from torchvision.models._utils import IntermediateLayerGetter  # (torchvision: see _backbone_body)
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead
        super().__init__()
        spec = SEGMENTATION_ARCHS.get(arch)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + classes), got {num_classes}")
        if output_stride not in spec.strides:
            raise UsageError(
                f"{arch} cannot be built at output stride {output_stride} (only {', '.join(map(str, spec.strides))})"
            )
        body, channels = _backbone_body(spec.backbone, output_stride)
        self.backbone = IntermediateLayerGetter(body, return_layers={_last_layer(body): "out"})
        self.backbone.weights_record = WeightsRecord(None, "none", "random init")
        self.classifier = DeepLabHead(channels, num_classes, ASPP_RATES[output_stride])
        self.arch, self.backbone_name = arch, spec.backbone
        self.num_classes, self.output_stride = num_classes, output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(x)["out"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def head_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "kind": "DeepLabV3", "arch": self.arch, "backbone": self.backbone_name,
            "num_classes": self.num_classes, "output_stride": self.output_stride,
        }


def _backbone_body(name: str, output_stride: int) -> tuple[nn.Module, int]:
    """The torchvision classification network (random init) dilated to ``output_stride``, and its width."""
    import torchvision  # here, not at the top: importing it loads torch._dynamo (~1.5 s per command)
    if name == "mobilenet_v3_large":
        # dilated=True: the last stage dilated instead of strided, i.e. stride 16 (torchvision's DeepLabV3).
        features = torchvision.models.mobilenet_v3_large(weights=None, dilated=True).features
        return features, int(features[-1].out_channels)
    resnet = torchvision.models.get_model(name, weights=None)
    if isinstance(resnet.layer4[0], torchvision.models.resnet.Bottleneck):
        resnet = torchvision.models.get_model(
            name, weights=None, replace_stride_with_dilation=[False, output_stride == 8, True]
        )
        return resnet, int(resnet.layer4[-1].conv3.out_channels)
    # BasicBlock ResNets: torchvision refuses to dilate them; wsss_core.backbones does it in place.
    if output_stride == 8:
        _dilate_basic_layer(resnet.layer3, previous_dilation=1, dilation=2)
        _dilate_basic_layer(resnet.layer4, previous_dilation=2, dilation=4)
    else:
        _dilate_basic_layer(resnet.layer4, previous_dilation=1, dilation=2)
    return resnet, int(resnet.layer4[-1].conv2.out_channels)


def _last_layer(body: nn.Module) -> str:
    return "layer4" if hasattr(body, "layer4") else str(len(body) - 1)


# ----------------------------------------------------------------------------- weights


def resolve_segmentation_weights(
    arch: str, weights: str | None, fallback_checkpoint: str | Path | None = None
) -> WeightsChoice:
    """The backbone weights of ``arch``, decided as for every network (wsss_core.weights).

    weights: None / "none", a torchvision weights name of the arch's backbone ("DEFAULT",
    "IMAGENET1K_V1"), or a checkpoint path. Offline, a torchvision name falls back to
    ``fallback_checkpoint`` (the pipeline's own trained CAM classifier) when its backbone
    is the arch's, else to random init; both loudly, and recorded in the choice.
    """
    backbone = SEGMENTATION_ARCHS.get(arch).backbone
    # A pipeline checkpoint holds one of BACKBONES: a backbone of torchvision's only (MobileNetV3) has none to fall back to.
    choice = resolve_pretrained(NETWORK, backbone, weights, fallback_checkpoint if backbone in BACKBONES else None)
    if choice.backbone != backbone:  # the fallback checkpoint is another backbone's
        note = (
            f"{choice.note}; but that checkpoint's {choice.backbone} does not fit {arch}: "
            f"the {NETWORK} network starts from RANDOM INIT"
        )
        logger.log(fallback_level(), note)
        choice = WeightsChoice(NETWORK, backbone, "none", backbone, choice.requested, note, fallback=True)
    return choice


def load_backbone_weights(model: SegmentationNet, state_dict: Mapping[str, torch.Tensor], source: object) -> None:
    """Load a classification backbone's state dict (torchvision's, or a CamNet's backbone)
    into ``model.backbone``: every weight must be there with its shape; only a classifier may be left over."""
    if model.backbone_name == "mobilenet_v3_large":  # torchvision keeps its layers under features.N
        state_dict = {k.removeprefix("features."): v for k, v in state_dict.items()}
    own = model.backbone.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own and not k.startswith(LEFTOVER_PREFIXES)]
    mismatched = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or mismatched:
        raise BadInputError(
            source,
            f"weights do not fit {model.arch}'s {model.backbone_name}: {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(mismatched)} of the wrong shape {mismatched[:3]}",
        )
    model.backbone.load_state_dict({k: state_dict[k] for k in own})


def build_segmentation_model(
    arch: str,
    num_classes: int,
    output_stride: int = 16,
    backbone_weights: WeightsChoice | None = None,
    seed: int = 0,
) -> SegmentationNet:
    """DeepLabV3 ``arch`` with its backbone from ``backbone_weights`` (resolve_segmentation_weights).

    None or a choice of "none": random init. The head is always random init (its classes
    are the dataset's). A torchvision download that worked when resolved but fails now
    falls back to random init with a warning; the model's weights_record says so.
    The random init is drawn from ``seed`` (the training config's), not from torch's global
    generator: left to that, two trainings of one config started from different weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SegmentationNet(arch, num_classes, output_stride)
    if backbone_weights is None or no_weights(backbone_weights.weights):
        note = backbone_weights.note if backbone_weights is not None else "random init"
        model.backbone.weights_record = WeightsRecord(None if backbone_weights is None else backbone_weights.requested,
                                                      "none", note)
        return model
    if backbone_weights.backbone != model.backbone_name:
        raise BadInputError(
            backbone_weights.weights, f"weights of {backbone_weights.backbone} do not fit {arch} ({model.backbone_name})"
        )
    state_dict, record = resolve_weights(model.backbone_name, backbone_weights.weights)
    if state_dict is not None:
        load_backbone_weights(model, state_dict, backbone_weights.weights)
    note = backbone_weights.note if state_dict is not None else record.reason  # failed since it was resolved
    model.backbone.weights_record = WeightsRecord(backbone_weights.requested, record.used, note)
    return model


def load_segmentation_model(path: str | Path, device: torch.device | str = "cpu") -> SegmentationNet:
    """A trained network from a checkpoint written by ``train_segmentation``."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("meta", {})
    if meta.get("kind") != "DeepLabV3":
        raise BadInputError(path, f"not a DeepLabV3 checkpoint (kind {meta.get('kind')!r})")
    model = SegmentationNet(meta["arch"], int(meta["num_classes"]), int(meta["output_stride"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()
