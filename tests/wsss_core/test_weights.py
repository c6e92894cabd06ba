import torch

from wsss_core.psa.cam import CamNet
from wsss_core.training import save_checkpoint
from wsss_core.weights import pretrained_loads, resolve_pretrained


def test_unloadable_pretrained_weights_fall_back_loudly_to_the_offered_checkpoint_or_random_init(tmp_path):
    # no network here: ImageNet weights cannot be had
    missing = resolve_pretrained("features", "resnet18", "DEFAULT", tmp_path / "missing.pt")
    assert missing.fallback and missing.weights == "none" and missing.requested == "DEFAULT"
    assert "RANDOM INIT" in missing.note and missing.record()["fallback"] is True
    checkpoint = tmp_path / "cam.pt"
    model = CamNet("resnet18", 3, None, 0.0)
    save_checkpoint(checkpoint, {"model": model.state_dict(), "meta": model.checkpoint_meta()})
    cam = resolve_pretrained("features", "vgg16", "DEFAULT", checkpoint)
    assert cam.fallback and cam.backbone == "resnet18" and cam.weights == str(checkpoint)
    asked = resolve_pretrained("cam", "resnet18", "none")
    assert not asked.fallback and asked.note == "random init requested"
    assert pretrained_loads("resnet18", "none")[0] is False and pretrained_loads("resnet18", "DEFAULT")[0] is False
    assert torch.is_tensor(next(iter(model.state_dict().values())))
