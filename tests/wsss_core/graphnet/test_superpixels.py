import numpy as np
import pytest

from wsss_core.graphnet.superpixels import SuperpixelConfig, compute_superpixels, relabel_consecutive


def two_tone_image(h=48, w=64):
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (200, 30, 30)
    image[:, w // 2 :] = (30, 30, 200)
    return image


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_labels_are_consecutive_int32_and_respect_the_colour_edge(method):
    image = two_tone_image()
    labels = compute_superpixels(image, SuperpixelConfig(method=method))
    assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    # no superpixel straddles the red/blue boundary
    left, right = set(np.unique(labels[:, :32])), set(np.unique(labels[:, 32:]))
    assert not left & right


def test_segment_density_follows_the_config():
    yy, xx = np.mgrid[0:100, 0:100]
    image = np.stack([xx * 2.5, yy * 2.5, (xx + yy) * 1.2], axis=-1).astype(np.uint8)  # smooth gradients
    few = compute_superpixels(image, SuperpixelConfig(segments_per_100k_pixels=100)).max() + 1
    many = compute_superpixels(image, SuperpixelConfig(segments_per_100k_pixels=1000)).max() + 1
    assert few < many and 40 <= many <= 140


def test_bad_shape_and_method():
    with pytest.raises(ValueError, match="HxWx3"):
        compute_superpixels(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="unknown superpixel method"):
        compute_superpixels(two_tone_image(), SuperpixelConfig(method="watershed"))  # type: ignore[arg-type]


def test_relabel_consecutive():
    assert relabel_consecutive(np.array([[5, 5], [9, 2]])).tolist() == [[1, 1], [2, 0]]
    rng = np.random.default_rng(0)
    for labels in (rng.integers(0, 300, (48, 64)), rng.integers(-5, 10**9, (7, 9)), rng.normal(size=(4, 4)), np.zeros((0, 3), np.int64)):
        expected = np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)
        got = relabel_consecutive(labels)
        assert got.dtype == np.int32 and np.array_equal(got, expected)
