import dataclasses

import numpy as np
import pytest
import torch

from wsss_core.errors import BadInputError
from wsss_core.metrics import ConfusionMatrix
from wsss_core.segmentation.config import SegmentationTrainConfig
from wsss_core.segmentation.model import SegmentationNet
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


class Crash(Exception):
    pass


def test_a_crashed_run_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_one(tmp_path):
    images, labels = rectangles(6)
    config = tiny_config(epochs=3)
    uninterrupted = train_segmentation(new_model(), images, labels, config, device="cpu")

    def crash_after_first(epoch, metrics):
        if epoch == 0:
            raise Crash

    checkpoint = tmp_path / "seg.pt"
    with pytest.raises(Crash):
        train_segmentation(new_model(), images, labels, config, device="cpu", checkpoint_path=checkpoint,
                           on_epoch_end=crash_after_first)
    epochs = []
    resumed = train_segmentation(new_model(seed=7), images, labels, config, device="cpu",
                                 checkpoint_path=checkpoint, on_epoch_end=lambda e, m: epochs.append(e))
    assert epochs == [1, 2]
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(BadInputError, match="different config"):
        train_segmentation(new_model(), images, labels, tiny_config(epochs=4, lr=0.02), device="cpu",
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
