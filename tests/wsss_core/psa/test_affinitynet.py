import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from wsss_core.psa.affinity import destination_inside_mask, neighbour_offsets
from wsss_core.psa.affinitynet import (
    AffinityNet,
    AffinityTrainConfig,
    load_affinitynet,
    pad_labels,
    predict_affinities,
    train_affinitynet,
)
from wsss_core.backbones import normalise_images
from wsss_core.psa.cam import CamNet
from wsss_core.checkpoints import save_checkpoint
from wsss_core.errors import BadInputError


def labelled_images(n: int, size: int = 32, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images with a coloured square (class 1) on noise (background 0), a neutral ring in between."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        image = rng.integers(80, 150, (size, size, 3)).astype(np.uint8)
        label = np.zeros((size, size), dtype=np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        side = size // 2
        label[max(0, y - 3) : y + side + 3, max(0, x - 3) : x + side + 3] = 255
        label[y : y + side, x : x + side] = 1
        image[y : y + side, x : x + side] = (220, 30, 30)
        items.append((image, label))
    return items


def tiny_config(**overrides) -> AffinityTrainConfig:
    values = dict(
        # PSA's optimiser: lr 0.1, no momentum
        backbone="resnet18", weights=None, epochs=3, batch_size=2, crop_size=None,
        flip=False, colour_jitter=None, batchnorm="train",
    )
    return AffinityTrainConfig(**{**values, **overrides})


def test_affinities_shape_range_and_definition():
    torch.manual_seed(0)
    model = AffinityNet("resnet18", None).eval()
    x = torch.randn(2, 3, 37, 50)
    with torch.no_grad():
        features = model(x)
        aff = model.affinities(x)
    h, w = math.ceil(37 / 8), math.ceil(50 / 8)
    assert features.shape == (2, 448, h, w)
    assert aff.shape == (2, 34, h, w)
    inside = torch.from_numpy(destination_inside_mask(h, w, 5))
    assert (aff[:, inside] > 0).all() and (aff[:, inside] <= 1).all()
    assert (aff[:, ~inside] == 0).all()
    # entry [k, y, x] pairs (y, x) with (y + dy, x + dx)
    k = 20
    dy, dx = (int(v) for v in neighbour_offsets(5)[k])
    y, x = 1, 3
    expected = torch.exp(-(features[1, :, y, x] - features[1, :, y + dy, x + dx]).abs().mean())
    torch.testing.assert_close(aff[1, k, y, x], expected)


def test_paper_head_widths_and_group_norm_switch():
    model = AffinityNet("resnet18", None, head_dims=(128, 256, 512), head_norm=False)
    assert model.fuse.in_channels == 896
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in AffinityNet("resnet18", None).modules()) == 3
    with pytest.raises(ValueError, match="multiples"):
        AffinityNet("resnet18", None, head_dims=(60, 128, 256))


def test_tiny_training_lowers_the_loss_and_checkpoints(tmp_path):
    items = labelled_images(4)
    log = []
    path = tmp_path / "aff.pt"
    model = train_affinitynet(items, tiny_config(), device="cpu", checkpoint_path=path,
                              on_epoch_end=lambda e, m: log.append((e, m["loss"])))
    assert [e for e, _ in log] == [0, 1, 2]
    assert log[-1][1] < log[0][1] * 0.9
    loaded = load_affinitynet(path)
    x = normalise_images(items[0][0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.affinities(x), model.affinities(x))


def _losses_by_workers() -> str:
    items = labelled_images(2, size=36)
    config = tiny_config(epochs=1, crop_size=48, flip=True, colour_jitter=(0.3, 0.3, 0.3, 0.1))
    losses = {}
    for workers in (0, 2):
        log = []
        train_affinitynet(items, dataclasses.replace(config, num_workers=workers), device="cpu",
                          on_epoch_end=lambda e, m: log.append(m["loss"]))
        losses[workers] = log
    return json.dumps(losses)


def test_training_with_crops_flips_and_padding_is_the_same_with_loader_workers():
    # Forked loader workers exit at once in a process that already runs Prefect's test server
    # threads (seen when the whole suite runs), so the comparison runs in a fresh interpreter.
    code = f"import runpy; print(runpy.run_path({__file__!r})['_losses_by_workers']())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    assert len(losses[0]) == 1 and np.isfinite(losses[0][0]) and losses[0][0] > 0
    assert losses[2] == pytest.approx(losses[0], rel=1e-5)  # augmentation depends on (seed, epoch, item) only


def test_initialise_the_backbone_from_a_camnet(tmp_path):
    torch.manual_seed(3)
    camnet = CamNet("resnet18", 2, weights=None)
    untrained = tiny_config(epochs=0)
    model = train_affinitynet(labelled_images(1), untrained, device="cpu", init_from=camnet)
    for key, value in camnet.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    path = tmp_path / "cam.pt"
    save_checkpoint(path, {"model": camnet.state_dict(), "meta": camnet.checkpoint_meta()})
    from_file = train_affinitynet(labelled_images(1), untrained, device="cpu", init_from=path)
    assert torch.equal(from_file.backbone.layer3[0].conv1.weight, camnet.backbone.layer3[0].conv1.weight)
    assert from_file.backbone.weights_record.used.startswith("camnet:")
    with pytest.raises(BadInputError, match="differs"):
        train_affinitynet(labelled_images(1), tiny_config(epochs=0, backbone="resnet34"), device="cpu",
                          init_from=camnet)


def test_predict_affinities_at_stride_8_and_4():
    torch.manual_seed(1)
    model = AffinityNet("resnet18", None)
    image = np.random.default_rng(2).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    at_8 = predict_affinities(model, image, "cpu")
    at_4 = predict_affinities(model, image, "cpu", stride=4)
    assert at_8.shape == (34, 4, 6) and at_8.dtype == np.float32
    assert at_4.shape == (34, math.ceil(30 / 4), math.ceil(45 / 4))
    for aff in (at_8, at_4):
        inside = destination_inside_mask(*aff.shape[1:], 5)
        assert (aff[inside] > 0).all() and (aff[inside] <= 1).all() and (aff[~inside] == 0).all()


def test_label_and_image_sizes_must_agree():
    image, label = labelled_images(1)[0]
    with pytest.raises(BadInputError, match="item 0"):
        train_affinitynet([(image, label[:-1])], tiny_config(epochs=1), device="cpu")


def test_pad_labels_pads_with_neutral():
    batch = pad_labels([np.zeros((2, 3), np.uint8), np.ones((3, 2), np.uint8)])
    assert batch.shape == (2, 3, 3)
    assert batch[0, 2].tolist() == [255, 255, 255] and batch[1, :, 2].tolist() == [255, 255, 255]
    assert batch[1, :3, :2].tolist() == [[1, 1]] * 3
