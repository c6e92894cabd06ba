import logging
import urllib.error
import urllib.request

import pytest
import torch
import torchvision

from wsss_core import weights
from wsss_core.backbones import build_backbone
from wsss_core.checkpoints import save_checkpoint
from wsss_core.psa.cam import CamNet
from wsss_core.weights import pretrained_loads, resolve_pretrained, resolve_weights


def test_unloadable_pretrained_weights_fall_back_loudly_to_the_offered_checkpoint_or_random_init(tmp_path, no_network):
    missing = resolve_pretrained("features", "resnet18", "DEFAULT", tmp_path / "missing.pt")
    assert missing.fallback and missing.weights == "none" and missing.requested == "DEFAULT"
    assert "RANDOM INIT" in missing.note and missing.record()["fallback"] is True
    checkpoint = tmp_path / "cam.pt"
    model = CamNet("resnet18", 3, None, 0.0)
    save_checkpoint(checkpoint, {"model": model.state_dict(), "meta": model.checkpoint_meta()})
    cam = resolve_pretrained("features", "vgg16", "DEFAULT", checkpoint)
    assert cam.fallback and cam.backbone == "resnet18" and cam.weights == str(checkpoint)
    fallen_back = build_backbone(cam.backbone, cam.weights).state_dict()  # starts from the checkpoint's backbone
    assert all(torch.equal(fallen_back[k], v) for k, v in model.backbone.state_dict().items())
    asked = resolve_pretrained("cam", "resnet18", "none")
    assert not asked.fallback and asked.note == "random init requested"
    assert pretrained_loads("resnet18", "none")[0] is False and pretrained_loads("resnet18", "DEFAULT")[0] is False
    loads, note = pretrained_loads("resnet18", str(checkpoint))  # weights that can be had do load
    assert loads and note.startswith(f"{checkpoint}: loaded file")


def test_torchvision_weights_that_cannot_be_loaded_fall_back_loudly(tmp_path, monkeypatch, caplog):
    # A corrupt file in torch's hub cache fails exactly as a failed download does, without the network.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / url.rsplit("/", 1)[-1]).write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="wsss_core.weights"):
        with pytest.warns(RuntimeWarning, match="RANDOM INIT"):
            state_dict, record = resolve_weights("resnet18", "DEFAULT")
    assert state_dict is None
    assert record.requested == "DEFAULT"
    assert record.used == "none"
    assert "IMAGENET1K_V1" in record.reason and "RANDOM INIT" in record.reason
    assert any("RANDOM INIT" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    with pytest.warns(RuntimeWarning):
        backbone = build_backbone("resnet18", "IMAGENET1K_V1")
    assert backbone.weights_record.used == "none"


def test_no_weights_is_a_recorded_random_init():
    for weights in (None, "none", "None"):
        state_dict, record = resolve_weights("resnet18", weights)
        assert state_dict is None
        assert record.used == "none"


def test_without_a_network_the_missing_weights_are_said_once_and_fetched_once_per_file(tmp_path, monkeypatch, caplog):
    import warnings as warnings_module

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    monkeypatch.setattr(weights, "_UNREACHABLE", {})
    tried = []

    def unreachable(url, dst, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with caplog.at_level(logging.INFO), warnings_module.catch_warnings():
        warnings_module.simplefilter("error")  # no RuntimeWarning on top of the log line
        for backbone in ("resnet18", "resnet18", "vgg16"):
            state_dict, record = resolve_weights(backbone, "DEFAULT")
            assert state_dict is None and record.used == "none" and "RANDOM INIT" in record.reason
        choice = resolve_pretrained("segmentation", "resnet18", "DEFAULT")
    assert choice.fallback and choice.weights == "none"  # still recorded as a fallback
    assert len(tried) == 2  # once per file, not once per request
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and loud[0].startswith(weights.OFFLINE_MESSAGE) and "resnet18" in loud[0]
    assert weights.offline()


def test_weights_known_to_be_unreachable_are_decided_without_torchvision(tmp_path, no_network, monkeypatch, caplog):
    # A first lookup goes through torchvision and keeps where the weights download from ...
    assert pretrained_loads("resnet18", "DEFAULT")[0] is False
    assert (tmp_path / "torch" / "hub" / weights.DOWNLOADS_FILE).is_file()
    # ... so a later process (here: this one, having said nothing yet) decides without torchvision
    monkeypatch.setattr(weights, "_UNREACHABLE", {})

    def no_torchvision(name):
        raise AssertionError("torchvision looked up")

    def unreachable(request, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(weights, "_torchvision_weights_enum", no_torchvision)
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with caplog.at_level(logging.WARNING, logger="wsss_core.weights"):
        loads, note = pretrained_loads("resnet18", "DEFAULT")
    assert not loads and note == "pretrained weights 'DEFAULT' of resnet18 could not be loaded (no network)"
    assert weights.offline() and [r.getMessage() for r in caplog.records][0].startswith(weights.OFFLINE_MESSAGE)
    # weights that are in torch's hub cache go the whole way (they may load)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]).write_bytes(b"")
    with pytest.raises(AssertionError, match="torchvision looked up"):
        pretrained_loads("resnet18", "DEFAULT")
