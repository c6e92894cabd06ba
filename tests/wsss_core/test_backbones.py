import math

import numpy as np
import pytest
import torch
import torchvision

from wsss_core.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_backbone,
    default_device,
    normalise_images,
)
from wsss_core.errors import BadInputError


EXPECTED_CHANNELS = {
    "vgg16": (256, 512, 512),
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "resnet101": (512, 1024, 2048),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANNELS))
def test_every_backbone_gives_three_stride_8_maps_with_its_channels(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, None).eval()
    height, width = 17, 26  # not multiples of 8: outputs are ceil(H/8) x ceil(W/8)
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, height, width))
    assert backbone.channels == EXPECTED_CHANNELS[name]
    assert [tuple(o.shape) for o in outputs] == [
        (1, c, math.ceil(height / 8), math.ceil(width / 8)) for c in EXPECTED_CHANNELS[name]
    ]
    assert all(torch.isfinite(o).all() and o.abs().sum() > 0 for o in outputs)


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet50"])
def test_torchvision_state_dicts_fit_the_backbone(name):
    with torch.device("meta"):  # keys and shapes only: nothing is allocated
        reference = torchvision.models.get_model(name, weights=None).state_dict()
        own = build_backbone(name, None).state_dict()
    assert set(own) <= set(reference)
    assert all(tuple(own[k].shape) == tuple(reference[k].shape) for k in own)
    # the classifier is the only thing left out
    left_out = {k.split(".")[0] for k in set(reference) - set(own)}
    assert left_out == ({"classifier"} if name == "vgg16" else {"fc"})


def test_dilation_keeps_the_receptive_field_growing():
    # A single-pixel change must reach farther in the stride-8 map than one cell.
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", None).eval()
    x = torch.randn(1, 3, 96, 96)
    y = x.clone()
    y[0, :, 48, 48] += 10.0
    with torch.no_grad():
        changed = (backbone(x)[-1] - backbone(y)[-1]).abs().sum(dim=1)[0] > 1e-6
    rows = torch.nonzero(changed.any(dim=1)).flatten()
    assert rows.max() - rows.min() >= 6  # stride-8 grid: 12 x 12, the change spans most of it


def test_local_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    source = build_backbone("resnet18", None)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("resnet18", path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.weights_record.used == str(path)
    assert "sha256" in loaded.weights_record.reason


def test_checkpoint_forms_that_load(tmp_path):
    torch.manual_seed(2)
    # a whole torchvision model (with its fc), and a training checkpoint of a model holding a backbone
    full = torchvision.models.resnet18(weights=None)
    torch.save(full.state_dict(), tmp_path / "torchvision.pth")
    loaded = build_backbone("resnet18", tmp_path / "torchvision.pth")
    assert torch.equal(loaded.conv1.weight, full.conv1.weight)
    backbone = build_backbone("resnet18", None)
    wrapped = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    wrapped["classifier.weight"] = torch.zeros(3, 512, 1, 1)
    torch.save({"model": wrapped, "epoch": 3}, tmp_path / "camnet.pth")
    loaded = build_backbone("resnet18", tmp_path / "camnet.pth")
    assert torch.equal(loaded.layer4[1].conv2.weight, backbone.layer4[1].conv2.weight)


def test_bad_checkpoints_are_errors_naming_the_path(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(BadInputError, match="missing.pth.*not found"):
        build_backbone("resnet18", missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not torch")
    with pytest.raises(BadInputError, match="garbage.pth.*cannot read"):
        build_backbone("resnet18", garbage)
    other = tmp_path / "resnet34.pth"
    torch.save(build_backbone("resnet34", None).state_dict(), other)
    with pytest.raises(BadInputError, match="resnet34.pth"):
        build_backbone("resnet18", other)  # layer counts match, keys do not: an error, never a fallback


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet", None)
    assert "resnet101" in BACKBONES


def test_normalise_images_values_and_layout():
    images = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    images[1, 2, 3] = (255, 0, 128)
    batch = normalise_images(images)
    assert batch.shape == (2, 3, 3, 4) and batch.dtype == torch.float32
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(batch[1, :, 2, 3], torch.tensor(expected), atol=1e-6)
    black = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(batch[0, :, 0, 0], torch.tensor(black))
    assert normalise_images(images[0]).shape == (1, 3, 3, 4)
    with pytest.raises(ValueError, match="uint8"):
        normalise_images(images.astype(np.float32))


def test_default_device_follows_cuda_availability():
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
