"""Torchvision backbones at output stride 8, built with the weights wsss_core.weights resolves.

Every backbone returns the feature maps of its last three stages, all at stride 8
(``ceil(H/8) x ceil(W/8)``), as DeepLab does: the strides of the late stages are
removed and their 3x3 convolutions dilated instead, so the pretrained weights still fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsss_core.errors import BadInputError
from wsss_core.registries import BACKBONES
from wsss_core.weights import WeightsRecord, resolve_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSIFIER_PREFIXES = ("fc", "classifier")  # torchvision heads: ignored when loading a backbone


class Backbone(nn.Module):
    """A feature extractor: ``forward(x) -> [stage_a, stage_b, stage_c]``, all at stride 8."""

    name: str = ""
    channels: tuple[int, int, int] = (0, 0, 0)
    weights_record: WeightsRecord = WeightsRecord(None, "none", "random init")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class VggBackbone(Backbone):
    """VGG-16 (DeepLab-style): pool4 keeps the size, conv5 dilated by 2, pool5 dropped.

    Stages: pool3 output (256 ch), relu4_3 (512), relu5_3 (512). Module indices equal
    torchvision's ``features.N`` so torchvision state dicts load as they are.
    """

    _POOL3, _RELU4_3, _RELU5_3 = 16, 22, 29

    def __init__(self, features: nn.Sequential):
        super().__init__()
        layers = list(features.children())[: self._RELU5_3 + 1]
        for index in (4, 9, 16):  # pool1-3: ceil so that outputs are ceil(H/8)
            layers[index] = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        layers[23] = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)  # pool4
        for index in (24, 26, 28):  # conv5_x
            _set_dilation(layers[index], 2)
        self.features = nn.Sequential(*layers)
        self.name = "vgg16"
        self.channels = (256, 512, 512)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in (self._POOL3, self._RELU4_3, self._RELU5_3):
                outputs.append(x)
        return outputs


class ResNetBackbone(Backbone):
    """ResNet with layer3/layer4 dilated (2, 4) instead of strided. Stages: layer2-4."""

    def __init__(self, resnet: torchvision.models.ResNet, name: str):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.name = name
        widths = [_layer_out_channels(layer) for layer in (self.layer2, self.layer3, self.layer4)]
        self.channels = (widths[0], widths[1], widths[2])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c2, c3, c4]


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Dilate a 3x3 conv in place, keeping its output size (padding = dilation)."""
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def _layer_out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    conv = last.conv3 if hasattr(last, "conv3") else last.conv2
    return int(conv.out_channels)


def _dilate_basic_layer(layer: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Turn a strided BasicBlock layer into a dilated one (torchvision refuses to)."""
    first = layer[0]
    first.conv1.stride = (1, 1)
    _set_dilation(first.conv1, previous_dilation)
    _set_dilation(first.conv2, dilation)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    for block in list(layer)[1:]:
        _set_dilation(block.conv1, dilation)
        _set_dilation(block.conv2, dilation)


def vgg16_backbone() -> Backbone:
    import torchvision  # here, not at the top: importing it loads torch._dynamo (~1.5 s per command)
    # Only the conv part: building torchvision's vgg16() would also initialise its 120M-weight classifier.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=False)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):  # torchvision's VGG init
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return VggBackbone(features)


def _basic_resnet(name: str) -> Callable[[], Backbone]:
    def build() -> Backbone:
        import torchvision
        resnet = torchvision.models.get_model(name, weights=None)
        _dilate_basic_layer(resnet.layer3, previous_dilation=1, dilation=2)
        _dilate_basic_layer(resnet.layer4, previous_dilation=2, dilation=4)
        return ResNetBackbone(resnet, name)

    return build


def _bottleneck_resnet(name: str) -> Callable[[], Backbone]:
    def build() -> Backbone:
        import torchvision
        resnet = torchvision.models.get_model(
            name, weights=None, replace_stride_with_dilation=[False, True, True]
        )
        return ResNetBackbone(resnet, name)

    return build


# Factories of the names in wsss_core.registries.BACKBONES (random init; build_backbone loads weights).
resnet18_backbone = _basic_resnet("resnet18")
resnet34_backbone = _basic_resnet("resnet34")
resnet50_backbone = _bottleneck_resnet("resnet50")
resnet101_backbone = _bottleneck_resnet("resnet101")


def build_backbone(name: str, weights: str | Path | None = None) -> Backbone:
    """The named backbone with the requested weights; see ``resolve_weights``."""
    backbone = _new_backbone(name)
    state_dict, record = resolve_weights(name, weights)
    if state_dict is not None:
        load_backbone_state(backbone, state_dict, source=record.used)
    backbone.weights_record = record
    return backbone


def _new_backbone(name: str) -> Backbone:
    return BACKBONES.get(name)()


def load_backbone_state(backbone: Backbone, state_dict: Mapping[str, torch.Tensor], source: object) -> None:
    """Load the backbone's weights from ``state_dict``; only a torchvision classifier may be left over."""
    own = backbone.state_dict()
    missing = [k for k in own if k not in state_dict]
    if missing:
        raise BadInputError(
            source, f"{len(missing)} of {len(own)} {backbone.name} weights missing, e.g. {missing[:3]}"
        )
    unexpected = [k for k in state_dict if k not in own and k.split(".")[0] not in CLASSIFIER_PREFIXES]
    if unexpected:
        raise BadInputError(
            source, f"{len(unexpected)} weights that {backbone.name} does not have, e.g. {unexpected[:3]}"
        )
    mismatched = [k for k in own if tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if mismatched:
        key = mismatched[0]
        raise BadInputError(
            source,
            f"{len(mismatched)} weights have the wrong shape for {backbone.name}, e.g. {key}: "
            f"{tuple(state_dict[key].shape)} != {tuple(own[key].shape)}",
        )
    backbone.load_state_dict({k: state_dict[k] for k in own})


def normalise_images(
    images: np.ndarray | torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 (B,H,W,3) or (H,W,3) RGB -> float32 (B,3,H,W) ImageNet-normalised, on ``device``."""
    batch = torch.as_tensor(images)
    if batch.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {batch.dtype}")
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected (B,H,W,3) images, got shape {tuple(batch.shape)}")
    batch = batch.to(device).permute(0, 3, 1, 2).float().div_(255.0)  # uint8 travels, floats do not
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1)
    return ((batch - mean) / std).contiguous()


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
