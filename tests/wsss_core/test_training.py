"""The shared training loop's pieces: poly schedule, epoch batches, augmentation, mAP."""

import logging
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from wsss_core.checkpoints import save_checkpoint
from wsss_core.training import (
    Augmentation,
    TrainConfig,
    augment,
    average_precision,
    checkpoint_state,
    deterministic_algorithms,
    epoch_batches,
    jitter_colours,
    mean_average_precision,
    poly_lr_factor,
    resume_state,
)


def test_average_precision_known_values():
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([1.0, 0.0, 1.0]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(average_precision(np.array([0.1, 0.2]), np.array([0.0, 0.0])))
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3]])
    targets = np.array([[1, 0], [0, 1], [0, 0]], dtype=float)
    assert mean_average_precision(scores, targets) == pytest.approx(1.0)
    assert mean_average_precision(-scores, targets) == pytest.approx(1 / 3)  # each positive ranked last


def test_poly_schedule_and_epoch_batches():
    assert poly_lr_factor(0, 100, 0.9) == 1.0
    assert poly_lr_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(100, 100, 0.9) == 0.0
    batches = epoch_batches(10, 4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4]  # the partial batch is dropped, as PSA
    assert len(set(np.concatenate(batches))) == 8
    assert not np.array_equal(np.concatenate(batches), np.concatenate(epoch_batches(10, 4, seed=0, epoch=1)))
    assert [len(b) for b in epoch_batches(3, 4, seed=0, epoch=0)] == [3]


def test_augment_crops_pads_and_keeps_labels_aligned():
    rng = np.random.default_rng(4)
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[:, 15:] = 255
    label = np.zeros((20, 30), dtype=np.uint8)
    label[:, 15:] = 1
    aug = Augmentation(crop_size=24, rescale_long_side=None, flip=True, colour_jitter=None)
    for _ in range(5):
        tensor, cropped = augment(image, label, aug, rng)
        assert tensor.shape == (3, 24, 24) and cropped.shape == (24, 24)
        padded = cropped == 255
        assert padded.sum() == 24 * 4  # 20 rows of 24 fit, 4 rows are padding
        assert torch.all(tensor[:, torch.from_numpy(padded)] == 0)  # padding is the mean colour
        white = tensor[0].numpy() > 1.0
        assert np.array_equal(white[~padded], cropped[~padded] == 1)


def test_colour_jitter_is_drawn_from_the_given_rng():
    image = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (3, 8, 9), dtype=np.uint8))
    strengths = (0.3, 0.3, 0.3, 0.1)
    first = jitter_colours(image, strengths, np.random.default_rng(7))
    assert torch.equal(first, jitter_colours(image, strengths, np.random.default_rng(7)))
    assert not torch.equal(first, jitter_colours(image, strengths, np.random.default_rng(8)))
    assert first.dtype == torch.uint8 and not torch.equal(first, image)
    assert torch.equal(jitter_colours(image, (0.0, 0.0, 0.0, 0.0), np.random.default_rng(7)), image)
    factor = np.random.default_rng(9)
    factor.permutation(4)
    expected = TF.adjust_brightness(image, float(factor.uniform(0.5, 1.5)))
    assert torch.equal(jitter_colours(image, (0.5, 0.0, 0.0, 0.0), np.random.default_rng(9)), expected)


def test_deterministic_mode_is_on_while_training_and_the_setting_comes_back():
    torch.use_deterministic_algorithms(False)
    with deterministic_algorithms(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_resume_with_another_thread_count_warns_that_the_weights_will_differ(tmp_path, monkeypatch, caplog):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config, meta = TrainConfig(), {"kind": "test"}
    path = tmp_path / "model.pt"
    save_checkpoint(path, checkpoint_state(model, optimizer, 1, meta, config, [{"loss": 1.0}]))
    with caplog.at_level(logging.WARNING, logger="wsss_core.training"):
        assert resume_state(path, model, optimizer, meta, config) == (1, [{"loss": 1.0}])
        assert not caplog.records
        monkeypatch.setattr(torch, "get_num_threads", lambda: 99)
        resume_state(path, model, optimizer, meta, config)
    assert "resumed with 99" in caplog.text and "differ in the last bits" in caplog.text
