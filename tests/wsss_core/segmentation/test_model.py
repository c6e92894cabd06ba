import pytest
import torch

from wsss_core.psa.cam import CamNet
from wsss_core.errors import BadInputError, UsageError
from wsss_core.segmentation.model import (
    SegmentationNet,
    build_segmentation_model,
    load_backbone_weights,
    resolve_segmentation_weights,
)
from wsss_core.registries import SEGMENTATION_ARCHS
from wsss_core.checkpoints import save_checkpoint
from wsss_core.training import checkpoint_state

CASES = [
    ("deeplabv3_resnet18", 8, 512), ("deeplabv3_resnet18", 16, 512),
    ("deeplabv3_resnet50", 8, 2048), ("deeplabv3_resnet50", 16, 2048),
    ("deeplabv3_resnet101", 8, 2048), ("deeplabv3_resnet101", 16, 2048),
    ("deeplabv3_mobilenet_v3_large", 16, 960),
]


@pytest.mark.parametrize(("arch", "stride", "channels"), CASES)
def test_each_arch_gives_logits_at_the_input_size_from_features_at_its_stride(arch, stride, channels):
    torch.manual_seed(0)
    model = SegmentationNet(arch, 3, stride).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        features = model.backbone(x)["out"]
        logits = model(x)
    assert features.shape == (1, channels, -(-48 // stride), -(-64 // stride))
    assert logits.shape == (1, 3, 48, 64)
    assert model.classifier[0].convs[1][0].dilation == ((6, 6) if stride == 16 else (12, 12))  # ASPP's first rate


def test_every_registered_arch_is_covered_and_mobilenet_refuses_stride_8():
    assert {arch for arch, _, _ in CASES} == set(SEGMENTATION_ARCHS.names())
    with pytest.raises(UsageError, match="only 16"):
        SegmentationNet("deeplabv3_mobilenet_v3_large", 3, 8)
    with pytest.raises(UsageError, match="unknown segmentation network"):
        SegmentationNet("deeplabv2_vgg16", 3, 8)


def test_random_init_is_recorded():
    choice = resolve_segmentation_weights("deeplabv3_resnet18", None)
    model = build_segmentation_model("deeplabv3_resnet18", 3, 16, choice)
    assert choice.weights == "none" and not choice.fallback
    assert model.backbone.weights_record.used == "none"


def _camnet_checkpoint(tmp_path, backbone):
    torch.manual_seed(1)
    camnet = CamNet(backbone, 2)
    path = tmp_path / f"cam-{backbone}.pt"
    optimizer = torch.optim.SGD(camnet.parameters(), lr=0.1)
    save_checkpoint(path, checkpoint_state(camnet, optimizer, 1, camnet.checkpoint_meta(), {}, []))
    return camnet, path


def test_the_pipelines_cam_backbone_starts_the_network_where_it_fits(tmp_path):
    camnet, path = _camnet_checkpoint(tmp_path, "resnet18")
    choice = resolve_segmentation_weights("deeplabv3_resnet18", str(path))
    model = build_segmentation_model("deeplabv3_resnet18", 3, 8, choice)
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, camnet.backbone.layer4[1].conv2.weight)
    assert model.backbone.weights_record.used == str(path)
    # The CAM net is dilated at stride 8 too; a stride-16 network takes the same weights.
    model16 = build_segmentation_model("deeplabv3_resnet18", 3, 16, choice)
    torch.testing.assert_close(model16.backbone.conv1.weight, camnet.backbone.conv1.weight)


def test_a_checkpoint_of_another_backbone_does_not_fit(tmp_path):
    _, path = _camnet_checkpoint(tmp_path, "resnet18")
    with pytest.raises(BadInputError, match="do not fit"):
        load_backbone_weights(SegmentationNet("deeplabv3_resnet50", 3, 16), torch.load(path)["model"], path)


def test_offline_torchvision_weights_fall_back_to_a_fitting_checkpoint_else_random(tmp_path, monkeypatch):
    import torchvision

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)  # offline even where online
    _, path = _camnet_checkpoint(tmp_path, "resnet18")
    fits = resolve_segmentation_weights("deeplabv3_resnet18", "DEFAULT", fallback_checkpoint=path)
    assert fits.fallback and fits.weights == str(path)
    other = resolve_segmentation_weights("deeplabv3_resnet50", "DEFAULT", fallback_checkpoint=path)
    assert other.fallback and other.weights == "none" and "RANDOM INIT" in other.note
    assert other.backbone == "resnet50"
    mobile = resolve_segmentation_weights("deeplabv3_mobilenet_v3_large", "DEFAULT")
    assert mobile.fallback and mobile.weights == "none" and mobile.requested == "DEFAULT"


def test_a_previous_rounds_checkpoint_starts_the_next_rounds_backbone(tmp_path):
    torch.manual_seed(2)
    previous = SegmentationNet("deeplabv3_mobilenet_v3_large", 3, 16)
    path = tmp_path / "round1.pt"
    optimizer = torch.optim.SGD(previous.parameters(), lr=0.1)
    save_checkpoint(path, checkpoint_state(previous, optimizer, 1, previous.checkpoint_meta(), {}, []))
    choice = resolve_segmentation_weights("deeplabv3_mobilenet_v3_large", str(path))
    model = build_segmentation_model("deeplabv3_mobilenet_v3_large", 5, 16, choice)  # another class count
    torch.testing.assert_close(model.backbone["16"][0].weight, previous.backbone["16"][0].weight)
    assert not torch.equal(model.classifier[4].bias[:3], previous.classifier[4].bias)  # the head starts afresh
