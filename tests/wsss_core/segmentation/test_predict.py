from dataclasses import replace

import numpy as np
import pytest
import torch

from wsss_core.crf import CRFConfig
from wsss_core.segmentation.config import SegmentationInferenceConfig
from wsss_core.segmentation.model import SegmentationNet
from wsss_core.segmentation.predict import (
    keep_classes, label_classes, predict_mask, predict_probabilities, predict_round_mask, round_probabilities, weigh_by_labels,
)
from tests.wsss_core.segmentation.helpers import NUM_CLASSES, rectangles


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SegmentationNet("deeplabv3_resnet18", NUM_CLASSES, 16).eval()


def test_probabilities_over_scales_and_flips_are_normalised_at_the_image_size(model):
    image = rectangles(1, height=48, width=64)[0][0]
    probs = predict_probabilities(model, image, scales=(0.75, 1.25), flip=True, device="cpu")
    assert probs.shape == (NUM_CLASSES, 48, 64) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    single = predict_probabilities(model, image, device="cpu")
    assert not np.allclose(single, probs)  # the scales and flips were used


def test_flip_averaging_is_the_mean_of_the_image_and_its_mirror(model):
    image = rectangles(1)[0][0]
    plain = predict_probabilities(model, image, device="cpu")
    mirrored = predict_probabilities(model, np.ascontiguousarray(image[:, ::-1]), device="cpu")[:, :, ::-1]
    both = predict_probabilities(model, image, flip=True, device="cpu")
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-5)


def test_masks_are_the_argmax_and_a_round_mask_may_go_through_the_crf(model):
    image = rectangles(1)[0][0]
    probs = predict_probabilities(model, image, device="cpu")
    mask = predict_mask(model, image, device="cpu")
    assert mask.dtype == np.uint8 and np.array_equal(mask, probs.argmax(axis=0))
    refined = predict_round_mask(model, image, SegmentationInferenceConfig(scales=(1.0,), flip=False, crf=True,
                                                                           crf_config=CRFConfig(iterations=2)), "cpu")
    assert refined.shape == image.shape[:2] and refined.max() < NUM_CLASSES


def test_a_training_image_keeps_to_its_label_classes():
    probs = np.random.default_rng(0).dirichlet(np.ones(NUM_CLASSES), size=(6, 8)).transpose(2, 0, 1).astype(np.float32)
    kept = keep_classes(probs, [2])
    assert set(np.unique(kept.argmax(axis=0))) <= {0, 2}
    np.testing.assert_allclose(kept.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(kept[2] / kept[0], probs[2] / probs[0], rtol=1e-5)  # the kept ones keep their ratios


def test_round_masks_keep_to_the_given_classes_only_when_configured(model):
    image = rectangles(1)[0][0]
    plain = SegmentationInferenceConfig(scales=(1.0,), flip=False, crf=False)
    kept = replace(plain, label_classes_only=True)
    free = predict_round_mask(model, image, plain, "cpu")
    only = [c for c in range(1, NUM_CLASSES) if c != int(free.max())][:1]
    labels = np.full(image.shape[:2], only[0], dtype=np.uint8)
    labels[0, 0] = 255  # void is no class
    assert np.array_equal(predict_round_mask(model, image, plain, "cpu", labels=labels), free)  # not configured
    assert set(np.unique(predict_round_mask(model, image, kept, "cpu", labels=labels))) <= {0, *only}


def random_probabilities(height: int = 6, width: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(NUM_CLASSES), size=(height, width)).transpose(2, 0, 1).astype(np.float32)


def test_label_classes_leave_out_void():
    assert label_classes(np.array([[0, 2, 255], [2, 2, 0]], dtype=np.uint8)) == [0, 2]


def test_labels_weigh_each_pixel_so_the_network_overrules_them_only_above_the_odds():
    probs = random_probabilities()
    labels = np.zeros(probs.shape[1:], dtype=np.uint8)
    labels[:, 4:] = 1
    labels[0, 0] = 255
    weighed = weigh_by_labels(probs, labels, odds=4.0)
    np.testing.assert_allclose(weighed.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(weighed[:, 0, 0], probs[:, 0, 0], rtol=1e-5)  # void: the network's own
    label_p = np.take_along_axis(probs, np.minimum(labels, NUM_CLASSES - 1)[None], axis=0)[0]
    overruled = (weighed.argmax(axis=0) != labels) & (labels != 255)
    assert np.all(probs.max(axis=0)[overruled] > 4.0 * label_p[overruled])  # only where the network is that sure
    kept = (weighed.argmax(axis=0) == labels)
    assert np.all(probs.max(axis=0)[kept] <= 4.0 * label_p[kept] + 1e-6)
    np.testing.assert_allclose(weigh_by_labels(probs, labels, odds=1.0), probs, rtol=1e-5)  # odds 1: the network alone
    assert np.array_equal(weigh_by_labels(probs, labels, odds=1e6).argmax(axis=0)[labels != 255], labels[labels != 255])


def test_a_round_takes_its_labels_only_as_configured():
    probs = random_probabilities(seed=1)
    labels = np.full(probs.shape[1:], 2, dtype=np.uint8)
    plain = SegmentationInferenceConfig(scales=(1.0,), flip=False, crf=False)
    assert round_probabilities(probs, plain, labels) is probs
    assert round_probabilities(probs, replace(plain, label_odds=4.0), None) is probs  # no labels: the network's
    both = round_probabilities(probs, replace(plain, label_classes_only=True, label_odds=4.0), labels)
    assert set(np.unique(both.argmax(axis=0))) <= {0, 2}
    with pytest.raises(ValueError, match="label_odds"):
        replace(plain, label_odds=0.5)
