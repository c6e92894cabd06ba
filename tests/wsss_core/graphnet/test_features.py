import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

from wsss_core.backbones import build_backbone
from wsss_core.graphnet.features import (
    FeatureConfig,
    bilinear_weights_1d,
    colour_position_features,
    extract_feature_maps,
    node_features,
    N_TEXTURE_FEATURES,
    pool_per_superpixel,
    texture_features,
)


def irregular_superpixels(height: int, width: int, seed: int) -> tuple[np.ndarray, int]:
    """Voronoi cells of random centres: irregular, connected-ish regions labelled 0..n-1."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform((0, 0), (height, width), size=(12, 2))
    yy, xx = np.mgrid[:height, :width]
    distances = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    labels = np.argmin(distances, axis=-1)
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(height, width).astype(np.int32)
    return labels, int(labels.max()) + 1


def resized(feature_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(feature_map.astype(np.float32))[None]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0].numpy()


@pytest.mark.parametrize("feature_shape", [(5, 7), (9, 4), (40, 60)])  # up, mixed and down-sampling
def test_mean_pooling_equals_resize_then_average(feature_shape):
    superpixels, n_nodes = irregular_superpixels(37, 53, seed=1)
    rng = np.random.default_rng(2)
    feature_map = rng.normal(size=(16, *feature_shape)).astype(np.float16)
    full = resized(feature_map, superpixels.shape)
    expected = np.stack([full[:, superpixels == k].mean(axis=1) for k in range(n_nodes)])
    pooled = pool_per_superpixel(feature_map, superpixels, n_nodes, "mean")
    assert pooled.shape == (n_nodes, 16) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, expected, atol=1e-5)


def test_max_pooling_equals_resize_then_max_and_differs_from_mean():
    superpixels, n_nodes = irregular_superpixels(29, 41, seed=3)
    feature_map = np.random.default_rng(4).normal(size=(70, 4, 6)).astype(np.float16)  # > one channel chunk
    full = resized(feature_map, superpixels.shape)
    expected = np.stack([full[:, superpixels == k].max(axis=1) for k in range(n_nodes)])
    pooled_max = pool_per_superpixel(feature_map, superpixels, n_nodes, "max")
    pooled_mean = pool_per_superpixel(feature_map, superpixels, n_nodes, "mean")
    np.testing.assert_allclose(pooled_max, expected, atol=1e-5)
    assert np.all(pooled_max >= pooled_mean - 1e-5)
    assert np.mean(pooled_max > pooled_mean + 1e-3) > 0.9


def test_nodes_without_pixels_get_zeros_and_bad_labels_are_refused():
    superpixels = np.zeros((8, 8), dtype=np.int32)
    superpixels[:, 4:] = 2  # node 1 has no pixel
    feature_map = np.ones((3, 2, 2), dtype=np.float16)
    for mode in ("mean", "max"):
        pooled = pool_per_superpixel(feature_map, superpixels, 3, mode)
        np.testing.assert_allclose(pooled, [[1, 1, 1], [0, 0, 0], [1, 1, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="labels must lie"):
        pool_per_superpixel(feature_map, superpixels, 2)
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_per_superpixel(feature_map, superpixels, 3, "median")


def test_bilinear_weights_reproduce_torch_interpolation():
    values = np.random.default_rng(5).normal(size=7)
    for out_size in (3, 7, 20):
        low, high, w_low, w_high = bilinear_weights_1d(out_size, 7)
        ours = values[low] * w_low + values[high] * w_high
        reference = F.interpolate(
            torch.from_numpy(values)[None, None], size=out_size, mode="linear", align_corners=False
        )[0, 0].numpy()
        np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_extract_feature_maps_shapes_order_and_batching():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", None)
    rng = np.random.default_rng(6)
    images = [
        rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        rng.integers(0, 256, (17, 9, 3), dtype=np.uint8),
        rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
    ]
    maps = extract_feature_maps(backbone, images, "cpu", batch_size=4)
    assert [m.shape for m in maps] == [
        (512, math.ceil(h / 8), math.ceil(w / 8)) for h, w, _ in (i.shape for i in images)
    ]
    assert all(m.dtype == np.float16 for m in maps)
    alone = extract_feature_maps(backbone, [images[2]], "cpu")[0]  # batched with images[0] above
    np.testing.assert_allclose(maps[2].astype(np.float32), alone.astype(np.float32), rtol=2e-3, atol=2e-3)
    assert not np.allclose(maps[0], maps[2])
    assert not backbone.training


def test_colour_position_features_of_two_flat_halves():
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[:, :10] = (200, 30, 30)
    image[:, 10:] = (20, 20, 220)
    superpixels = np.zeros((10, 20), dtype=np.int32)
    superpixels[:, 10:] = 1
    features = colour_position_features(image, superpixels, 2)
    scale = np.array([100.0, 128.0, 128.0])
    np.testing.assert_allclose(features[0, :3], rgb2lab(image[:1, :1])[0, 0] / scale, atol=1e-5)
    np.testing.assert_allclose(features[1, :3], rgb2lab(image[:1, 10:11])[0, 0] / scale, atol=1e-5)
    np.testing.assert_allclose(features[:, 3:6], 0.0, atol=1e-3)  # flat colour: no spread
    np.testing.assert_allclose(features[:, 6:], [[0.5, 0.25], [0.5, 0.75]], atol=1e-6)


def test_node_features_follow_the_config():
    superpixels, n_nodes = irregular_superpixels(16, 24, seed=7)
    image = np.random.default_rng(8).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    feature_map = np.random.default_rng(9).normal(size=(5, 2, 3)).astype(np.float16)
    plain = node_features(feature_map, image, superpixels, n_nodes, FeatureConfig())
    config = FeatureConfig(add_colour=True, add_position=True)
    both = node_features(feature_map, image, superpixels, n_nodes, config)
    position = node_features(None, image, superpixels, n_nodes, FeatureConfig(add_position=True))
    assert plain.shape == (n_nodes, 5) and both.shape == (n_nodes, 13) and position.shape == (n_nodes, 2)
    np.testing.assert_allclose(both[:, :5], plain)
    np.testing.assert_allclose(both[:, 11:], position)
    with pytest.raises(ValueError, match="no features"):
        node_features(None, image, superpixels, n_nodes, FeatureConfig())


def test_texture_features_tell_a_flat_half_from_a_striped_half():
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    image[:, 16:][:, np.arange(16) % 8 < 4] = 30  # vertical stripes, 4 px wide, on the right
    superpixels = np.zeros((32, 32), dtype=np.int32)
    superpixels[:, 16:] = 1
    features = texture_features(image, superpixels, 2)
    assert features.shape == (2, N_TEXTURE_FEATURES) and features.dtype == np.float32
    gradients = features[0, 0], features[1, 0]  # mean gradient magnitude at sigma 1
    assert gradients[1] > 4 * gradients[0]  # the flat half only sees the edge between the halves
    lbp = features[:, -(8 + 2):]
    np.testing.assert_allclose(lbp.sum(axis=1), 1.0, rtol=1e-5)  # a histogram per node
    assert not np.allclose(lbp[0], lbp[1])
    with_texture = node_features(None, image, superpixels, 2, FeatureConfig(add_colour=True, add_texture=True))
    assert with_texture.shape == (2, 6 + N_TEXTURE_FEATURES)
