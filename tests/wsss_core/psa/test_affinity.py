import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from wsss_core.psa.affinity import (
    AffinityConfig,
    affinities_from_features,
    affinity_loss,
    background_score,
    confident_label_map,
    confident_label_map_at_stride,
    destination_inside_mask,
    downsample_labels,
    downsample_scores,
    labels_from_confident_scores,
    neighbour_offsets,
    pair_labels,
)
from wsss_core.errors import BadInputError

# PSA's search_dst for radius 5, written out by hand: (dy, dx).
PSA_OFFSETS_RADIUS_5 = (
    [(0, 1), (0, 2), (0, 3), (0, 4)]
    + [(1, dx) for dx in (-4, -3, -2, -1, 0, 1, 2, 3, 4)]
    + [(2, dx) for dx in (-4, -3, -2, -1, 0, 1, 2, 3, 4)]
    + [(3, dx) for dx in (-3, -2, -1, 0, 1, 2, 3)]
    + [(4, dx) for dx in (-2, -1, 0, 1, 2)]
)


def offset_index(dy: int, dx: int) -> int:
    return PSA_OFFSETS_RADIUS_5.index((dy, dx))


def test_neighbour_offsets_are_psas_34_in_psas_order():
    offsets = neighbour_offsets(5)
    assert offsets.shape == (34, 2)
    assert [tuple(o) for o in offsets.tolist()] == PSA_OFFSETS_RADIUS_5
    # one half-plane: no offset together with its opposite
    as_set = {tuple(o) for o in offsets.tolist()}
    assert not any((-dy, -dx) in as_set for dy, dx in as_set)
    assert len(neighbour_offsets(2)) == 4  # (0,1), (1,-1), (1,0), (1,1)


def test_background_score_is_one_minus_max_to_the_alpha():
    cams = np.array([[[0.5, 0.0]], [[0.2, 0.9]]], dtype=np.float32)
    np.testing.assert_allclose(background_score(cams, 4.0), [[0.0625, 0.1**4]], rtol=1e-5)
    np.testing.assert_allclose(background_score(cams[:0], 4.0), np.ones((1, 2)))


# 0 background, 3 and 7 classes, 255 neutral.
TINY_LABELS = np.array(
    [
        [0, 0, 3, 3, 255, 0],
        [0, 0, 3, 7, 7, 0],
        [255, 0, 0, 7, 7, 0],
        [255, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)


def pair_kind(labels: tuple[np.ndarray, np.ndarray, np.ndarray], dy: int, dx: int, y: int, x: int) -> tuple:
    k = offset_index(dy, dx)
    return tuple(int(label[k, y, x]) for label in labels)


def test_pair_labels_on_hand_made_map():
    labels = pair_labels(TINY_LABELS, radius=5)
    for label in labels:
        assert label.shape == (34, 4, 6) and label.dtype == np.float32
    # (bg_pos, fg_pos, neg)
    assert pair_kind(labels, 0, 1, 0, 0) == (1, 0, 0)  # bg-bg
    assert pair_kind(labels, 0, 1, 0, 2) == (0, 1, 0)  # 3-3
    assert pair_kind(labels, 1, 1, 1, 3) == (0, 1, 0)  # 7-7 diagonal
    assert pair_kind(labels, 0, 1, 1, 2) == (0, 0, 1)  # 3-7 cross class
    assert pair_kind(labels, 0, 1, 0, 1) == (0, 0, 1)  # bg-3
    assert pair_kind(labels, 0, 1, 0, 3) == (0, 0, 0)  # 3-neutral
    assert pair_kind(labels, 1, -1, 0, 4) == (0, 0, 0)  # neutral-7
    assert pair_kind(labels, 1, 0, 2, 0) == (0, 0, 0)  # neutral-neutral
    assert pair_kind(labels, 2, 2, 1, 0) == (1, 0, 0)  # bg-bg two rows apart
    assert pair_kind(labels, 2, -2, 0, 2) == (0, 0, 0)  # 3-neutral two rows apart
    assert pair_kind(labels, 0, 1, 3, 5) == (0, 0, 0)  # destination outside the map
    assert pair_kind(labels, 4, 0, 0, 0) == (0, 0, 0)  # destination row 4 outside


def brute_force_pair_labels(label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    height, width = label_map.shape
    out = np.zeros((3, 34, height, width), dtype=np.float32)
    for k, (dy, dx) in enumerate(PSA_OFFSETS_RADIUS_5):
        for y in range(height):
            for x in range(width):
                ty, tx = y + dy, x + dx
                if not (0 <= ty < height and 0 <= tx < width):
                    continue
                a, b = int(label_map[y, x]), int(label_map[ty, tx])
                if a == 255 or b == 255:
                    continue
                kind = 2 if a != b else (0 if a == 0 else 1)
                out[kind, k, y, x] = 1.0
    return out[0], out[1], out[2]


def test_pair_labels_match_brute_force_on_random_map():
    rng = np.random.default_rng(3)
    label_map = rng.choice(np.array([0, 2, 5, 255], dtype=np.uint8), size=(9, 11), p=[0.4, 0.25, 0.2, 0.15])
    for ours, expected in zip(pair_labels(label_map), brute_force_pair_labels(label_map)):
        np.testing.assert_array_equal(ours, expected)
    inside = destination_inside_mask(9, 11)
    total = sum(label.sum() for label in pair_labels(np.zeros((9, 11), np.uint8)))
    assert total == inside.sum()


def test_destination_inside_mask_counts_pairs():
    mask = destination_inside_mask(12, 10)
    # offset (0, 4): sources in columns 0..5 of every row
    assert mask[offset_index(0, 4)].sum() == 12 * 6
    # offset (4, -2): rows 0..7, columns 2..9
    assert mask[offset_index(4, -2)].sum() == 8 * 8
    assert not mask[offset_index(4, -2), 8:].any() and not mask[offset_index(4, -2), :, :2].any()
    assert destination_inside_mask(2, 2)[offset_index(1, -4)].sum() == 0


def test_labels_from_confident_scores_follow_psa_rule():
    # channels: background, tag 4, tag 9; five pixels in a row
    low = np.array([[0.2, 0.7, 0.8, 0.2, 0.0], [0.7, 0.2, 0.1, 0.1, 0.0], [0.1, 0.1, 0.1, 0.7, 0.0]])[:, None, :]
    high = np.array([[0.1, 0.2, 0.9, 0.8, 0.0], [0.8, 0.7, 0.1, 0.1, 0.0], [0.1, 0.1, 0.0, 0.1, 0.0]])[:, None, :]
    label = labels_from_confident_scores(low, high, np.array([4, 9]))
    # fg both ways -> 4; low bg, high fg -> neutral; both bg -> 0; low fg but high bg -> 0; no score -> 255
    np.testing.assert_array_equal(label, [[4, 255, 0, 0, 255]])
    assert label.dtype == np.uint8


def three_zone_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64x64: red core (r<10), brown ring (10<=r<20), green background; CAM 0.9 / 0.15 / 0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(yy - 32, xx - 32)
    colour = np.where((r < 10)[..., None], [200, 40, 40], np.where((r < 20)[..., None], [140, 110, 60], [40, 160, 60]))
    image = np.clip(colour + rng.integers(-8, 9, colour.shape), 0, 255).astype(np.uint8)
    cam = np.where(r < 10, 0.9, np.where(r < 20, 0.15, 0.0))
    cam = np.clip(gaussian_filter(cam, 1.5) + rng.uniform(0, 0.02, cam.shape), 0, 1)[None].astype(np.float32)
    return image, cam, r


def test_confident_label_map_core_ring_and_background():
    image, cam, r = three_zone_scene()
    label = confident_label_map(image, cam, np.array([7]))
    assert label.shape == (64, 64) and label.dtype == np.uint8
    assert np.all(label[r < 8] == 7)
    assert np.all(label[(r > 12) & (r < 18)] == 255)
    assert np.all(label[r > 22] == 0)
    assert set(np.unique(label).tolist()) == {0, 7, 255}
    # With one alpha for both maps nothing is left neutral.
    same_alpha = replace(AffinityConfig(), alpha_fg=4.0, alpha_bg=4.0)
    assert not np.any(confident_label_map(image, cam, np.array([7]), same_alpha) == 255)


def test_confident_label_map_two_classes_and_stride_grid():
    image, cam, r = three_zone_scene()
    flipped_image, flipped_cam = image[:, ::-1].copy(), cam[:, :, ::-1].copy()
    # left half: the scene, right half: the mirrored scene shifted -> two objects side by side
    wide_image = np.concatenate([image, flipped_image], axis=1)
    cams = np.zeros((2, 64, 128), np.float32)
    cams[0, :, :64], cams[1, :, 64:] = cam[0], flipped_cam[0]
    label = confident_label_map(wide_image, cams, np.array([3, 12]))
    assert label[32, 32] == 3 and label[32, 96] == 12 and label[0, 0] == 0 and label[0, 127] == 0
    small = confident_label_map_at_stride(wide_image, cams, np.array([3, 12]))
    assert small.shape == (8, 16)
    assert small[3:5, 3:5].tolist() == [[3, 3], [3, 3]] and small[3:5, 11:13].tolist() == [[12, 12], [12, 12]]
    assert small[0, 0] == 0 and small[2, 2] == 255


def test_confident_label_map_rejects_bad_input():
    image, cam, _ = three_zone_scene()
    with pytest.raises(BadInputError):
        confident_label_map(image, cam * 2, np.array([7]))
    with pytest.raises(BadInputError):
        confident_label_map(image, cam, np.array([7, 8]))
    with pytest.raises(BadInputError):
        confident_label_map(image, cam, np.array([0]))


def test_downsample_scores_is_zero_padded_block_mean():
    scores = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    small = downsample_scores(scores, 2)
    assert small.shape == (2, 3, 2)
    assert small[0, 0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4)
    assert small[0, 2, 1] == pytest.approx(14 / 4)  # one real pixel, three zeros


def test_downsample_labels_majority_per_block():
    label_map = np.array(
        [
            [0, 0, 5, 5, 255],
            [0, 5, 5, 255, 255],
            [255, 255, 5, 0, 0],
            [255, 0, 0, 5, 9],
            [9, 9, 9, 0, 9],
        ],
        dtype=np.uint8,
    )
    expected = [[0, 5, 255], [255, 0, 0], [9, 0, 9]]  # ties go to the smaller label
    np.testing.assert_array_equal(downsample_labels(label_map, 2), expected)


def test_affinity_loss_on_toy_case():
    aff = torch.tensor([0.9, 0.6, 0.5, 0.2, 0.7]).reshape(1, 5, 1, 1)
    bg_pos = torch.tensor([1.0, 1.0, 0, 0, 0]).reshape(1, 5, 1, 1)
    fg_pos = torch.tensor([0, 0, 1.0, 0, 0]).reshape(1, 5, 1, 1)
    neg = torch.tensor([0, 0, 0, 1.0, 0]).reshape(1, 5, 1, 1)  # last entry: neutral, in no set
    eps = 1e-5
    bg = -(math.log(0.9 + eps) + math.log(0.6 + eps)) / (2 + eps)
    fg = -math.log(0.5 + eps) / (1 + eps)
    ng = -math.log(1 + eps - 0.2) / (1 + eps)
    expected = bg / 4 + fg / 4 + ng / 2
    assert expected == pytest.approx(0.3619, abs=1e-4)
    loss = affinity_loss(aff, bg_pos, fg_pos, neg)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # An empty set contributes 0, not NaN, and the loss has a gradient.
    aff.requires_grad_(True)
    no_fg = affinity_loss(aff, bg_pos, torch.zeros_like(fg_pos), neg)
    assert no_fg.item() == pytest.approx(bg / 4 + ng / 2, rel=1e-6)
    no_fg.backward()
    assert aff.grad[0, 4].item() == 0.0 and aff.grad[0, 0].item() < 0 and aff.grad[0, 3].item() > 0


def test_affinities_from_features_mean_l1():
    features = torch.zeros(1, 2, 3, 4)
    features[0, :, 0, 0] = torch.tensor([1.0, 3.0])
    features[0, :, 0, 1] = torch.tensor([2.0, 1.0])
    aff = affinities_from_features(features)
    assert aff.shape == (1, 34, 3, 4)
    assert aff[0, offset_index(0, 1), 0, 0].item() == pytest.approx(math.exp(-1.5))
    assert aff[0, offset_index(0, 2), 0, 1].item() == pytest.approx(math.exp(-1.5))  # (0,1) vs zero (0,3)
    assert aff[0, offset_index(1, 0), 1, 1].item() == pytest.approx(1.0)  # equal features
    inside = torch.from_numpy(destination_inside_mask(3, 4))[None]
    assert torch.all(aff[~inside] == 0) and torch.all(aff[inside] > 0)
