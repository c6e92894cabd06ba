import numpy as np
import pytest

from wsss_core.crf import CRFConfig, crf_inference, unary_from_probabilities
from wsss_core.errors import BadInputError


def two_colour_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40x60 image: red left, blue right (slightly noisy); true mask 0 / 1; 30%-corrupted probabilities."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((40, 60), dtype=np.int64)
    truth[:, 27:] = 1
    colours = np.array([[200, 40, 40], [40, 40, 200]])
    image = np.clip(colours[truth] + rng.integers(-10, 11, (40, 60, 3)), 0, 255).astype(np.uint8)
    noisy = np.where(rng.random(truth.shape) < 0.3, 1 - truth, truth)
    probs = np.stack([np.where(noisy == 0, 0.65, 0.35), np.where(noisy == 1, 0.65, 0.35)]).astype(np.float32)
    return image, probs, truth


def test_crf_cleans_a_noisy_two_colour_mask():
    image, probs, truth = two_colour_scene()
    before = (probs.argmax(0) == truth).mean()
    refined = crf_inference(image, probs)
    after = (refined.argmax(0) == truth).mean()
    assert 0.65 < before < 0.75
    assert after > 0.98
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)


def test_crf_with_no_iterations_keeps_the_unary_argmax():
    image, probs, _ = two_colour_scene(seed=1)
    refined = crf_inference(image, probs, CRFConfig(iterations=0))
    np.testing.assert_array_equal(refined.argmax(0), probs.argmax(0))


def test_unary_is_negative_log_of_clipped_probabilities():
    probs = np.array([[[0.5, 0.0]], [[1.0, 2.0]]], dtype=np.float32)
    unary = unary_from_probabilities(probs)
    assert unary.shape == (2, 2) and unary.flags.c_contiguous and unary.dtype == np.float32
    np.testing.assert_allclose(unary, [[np.log(2), -np.log(1e-5)], [0.0, 0.0]], rtol=1e-5)


def test_crf_rejects_mismatched_input():
    image, probs, _ = two_colour_scene()
    with pytest.raises(BadInputError):
        crf_inference(image, probs[:, :-1])
    with pytest.raises(BadInputError):
        crf_inference(image.astype(np.float32), probs)
