from dataclasses import replace

import numpy as np
import pytest
import torch

from wsss_core.crf import CRFConfig
from wsss_core.segmentation.config import SegmentationInferenceConfig
from wsss_core.segmentation.model import SegmentationNet
from wsss_core.segmentation.predict import keep_classes, predict_mask, predict_probabilities, predict_round_mask
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
    assert np.array_equal(predict_round_mask(model, image, plain, "cpu", classes=only), free)  # not configured
    assert set(np.unique(predict_round_mask(model, image, kept, "cpu", classes=only))) <= {0, *only}
