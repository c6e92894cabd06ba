import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_core.checkpoints import read_checkpoint
from wsss_core.errors import BadInputError
from wsss_core.metrics import ConfusionMatrix
from wsss_core.segmentation.config import SegmentationTrainConfig
from wsss_core.segmentation.model import SegmentationNet, build_segmentation_model
from wsss_core.segmentation.predict import predict_mask
from wsss_core.segmentation.train import random_scale, train_segmentation
from tests.wsss_core.segmentation.helpers import NUM_CLASSES, rectangles


def tiny_config(**changes) -> SegmentationTrainConfig:
    base = SegmentationTrainConfig(
        backbone="deeplabv3_resnet18", weights=None, output_stride=16, epochs=2, batch_size=3, lr=0.01,
        crop_size=48, scale_range=(0.75, 1.25),
    )
    return dataclasses.replace(base, **changes)


def new_model(seed: int = 0, stride: int = 16) -> SegmentationNet:
    torch.manual_seed(seed)
    return SegmentationNet("deeplabv3_resnet18", NUM_CLASSES, stride)


def test_random_scale_resizes_image_and_label_together_keeping_label_values():
    images, labels = rectangles(1)
    image, label = random_scale(images[0], labels[0], (1.5, 1.5), np.random.default_rng(0))
    assert image.shape == (72, 96, 3) and label.shape == (72, 96)
    assert set(np.unique(label)) <= set(np.unique(labels[0]))  # NEAREST: no blended classes
    red = np.all(image == (200, 40, 40), axis=-1)
    assert red.sum() > 0 and np.mean(label[red] == 1) > 0.95


@pytest.mark.slow
def test_training_lowers_the_loss_and_segments_its_training_images():
    images, labels = rectangles(6)
    log = []
    # Stride 8: at 16 these 48x64 images are 3x4 feature cells and it learns far slower.
    model = train_segmentation(
        new_model(stride=8), images, labels, tiny_config(epochs=24, lr=0.03, output_stride=8), device="cpu",
        on_epoch_end=lambda epoch, metrics: log.append(metrics),
    )
    assert len(log) == 24 and log[-1]["loss"] < 0.4 * log[0]["loss"]
    assert log[-1]["pixel_accuracy"] > log[0]["pixel_accuracy"]
    matrix = ConfusionMatrix(NUM_CLASSES)
    for image, label in zip(images, labels):
        matrix.update(predict_mask(model, image, device="cpu"), label)
    background_share = np.mean([np.mean(label[label != 255] == 0) for label in labels])
    assert matrix.pixel_accuracy() > background_share + 0.05  # better than calling everything background
    assert np.all(matrix.iou() > 0.4)  # every class found


def seeded_model(seed: int = 0) -> SegmentationNet:
    return build_segmentation_model("deeplabv3_resnet18", NUM_CLASSES, 16, None, seed=seed)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Bit for bit: every tensor of the state dicts (weights, batch-norm statistics)."""
    a, b = a.state_dict(), b.state_dict()
    assert list(a) == list(b)
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} tensors differ: {different[:5]}"


def test_two_trainings_with_one_seed_end_with_the_same_weights_bit_for_bit():
    # The random init comes from the config's seed (build_segmentation_model), the rest of the draws from
    # (seed, epoch, image) (wsss_core.training.fit); same thread count, as within one process.
    images, labels = rectangles(6)
    first, second = (train_segmentation(seeded_model(), images, labels, tiny_config(), device="cpu") for _ in range(2))
    assert_same_weights(first, second)
    assert not torch.equal(seeded_model(0).classifier[-1].weight, seeded_model(1).classifier[-1].weight)


REPO_ROOT = Path(__file__).resolve().parents[3]
# Run in a process of its own and SIGKILLed (no clean-up of any kind) in the middle of the second
# epoch: its first batch has already changed the weights in memory, the checkpoint holds epoch 1.
KILLED_MID_EPOCH = """
import os, signal, sys
import torch
import wsss_core.segmentation.train as train
from tests.wsss_core.segmentation.helpers import rectangles
from tests.wsss_core.segmentation.test_train import seeded_model, tiny_config

torch.set_num_threads(int(sys.argv[2]))
real_batch_loss, calls = train._batch_loss, []

def killed_in_the_second_epoch(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:  # 6 images in batches of 3: the second batch of epoch 2
        os.kill(os.getpid(), signal.SIGKILL)
    return real_batch_loss(*args, **kwargs)

train._batch_loss = killed_in_the_second_epoch
images, labels = rectangles(6)
train.train_segmentation(seeded_model(), images, labels, tiny_config(), device="cpu", checkpoint_path=sys.argv[1])
"""


def test_a_training_killed_mid_epoch_resumes_to_the_uninterrupted_runs_weights(tmp_path):
    images, labels = rectangles(6)
    config = tiny_config()
    uninterrupted = train_segmentation(seeded_model(), images, labels, config, device="cpu")

    checkpoint = tmp_path / "seg.pt"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_EPOCH, str(checkpoint), str(torch.get_num_threads())],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert read_checkpoint(checkpoint)["epoch"] == 1
    epochs = []
    resumed = train_segmentation(seeded_model(seed=7), images, labels, config, device="cpu",
                                 checkpoint_path=checkpoint, on_epoch_end=lambda e, m: epochs.append(e))
    assert epochs == [1]  # epoch 2 redone from its start, the weights of epoch 1 from the checkpoint
    assert_same_weights(uninterrupted, resumed)
    with pytest.raises(BadInputError, match="different config"):
        train_segmentation(seeded_model(), images, labels, tiny_config(epochs=4, lr=0.02), device="cpu",
                           checkpoint_path=checkpoint)


def test_batches_of_one_are_refused_as_aspp_pooling_cannot_train_on_them():
    images, labels = rectangles(1)
    with pytest.raises(ValueError, match="at least 2"):
        train_segmentation(new_model(), images, labels, tiny_config(epochs=1), device="cpu")


def test_labels_outside_the_classes_are_refused():
    images, labels = rectangles(2)
    labels[1][0, 0] = 7
    with pytest.raises(BadInputError, match=r"\[7\]"):
        train_segmentation(new_model(), images, labels, tiny_config(epochs=1), device="cpu")


@pytest.mark.slow
def test_spawned_loader_workers_give_the_same_training_as_none():
    # Spawned, not forked (forked workers die in a process running Prefect); augmentation
    # draws from (seed, epoch, image) only, so the workers change nothing.
    images, labels = rectangles(6)
    losses = {}
    for workers in (0, 1):
        log = []
        train_segmentation(new_model(), images, labels, tiny_config(epochs=1, num_workers=workers), device="cpu",
                           on_epoch_end=lambda e, m: log.append(m["loss"]))
        losses[workers] = log
    assert losses[0] == pytest.approx(losses[1])
