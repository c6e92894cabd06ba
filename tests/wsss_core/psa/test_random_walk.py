import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion
from benchmarks.dense_reference import dense_affinity_matrix, dense_random_walk, psa_dense_propagate_scores
from wsss_core.psa.affinity import destination_inside_mask, neighbour_offsets
from wsss_core.errors import BadInputError
from wsss_core.psa.random_walk import (
    RandomWalkConfig,
    affinity_matrix,
    cams_with_background,
    propagate,
    propagate_scores,
    random_walk,
    random_walk_torch,
    transition_matrix,
)

OFFSET_0_1, OFFSET_0_2 = 0, 1  # PSA order starts (0, 1), (0, 2), ...


def region_affinities(regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(34, h, w): ~0.95 inside a region, ~0.05 across region borders, 0 where the pair leaves the map."""
    height, width = regions.shape
    aff = np.zeros((34, height, width), dtype=np.float32)
    for k, (dy, dx) in enumerate(neighbour_offsets(5)):
        for y in range(height):
            for x in range(width):
                ty, tx = y + dy, x + dx
                if 0 <= ty < height and 0 <= tx < width:
                    same = regions[y, x] == regions[ty, tx]
                    aff[k, y, x] = rng.uniform(0.9, 1.0) if same else rng.uniform(0.0, 0.1)
    return aff


def test_transition_rows_sum_to_one_and_weights_are_symmetric():
    rng = np.random.default_rng(0)
    aff = rng.random((34, 12, 10), dtype=np.float32)
    transition = transition_matrix(aff, beta=8)
    np.testing.assert_allclose(np.asarray(transition.sum(axis=1)).ravel(), 1.0, rtol=1e-5)
    weights = affinity_matrix(aff, beta=8)
    assert weights.nnz == 2 * destination_inside_mask(12, 10).sum() + 120
    assert abs(weights - weights.T).max() == 0
    np.testing.assert_allclose(weights.diagonal(), 1.0)
    # entry (0,0)->(0,1) is aff^beta, normalised by row 0's degree
    degree = np.asarray(weights.sum(axis=1)).ravel()
    assert weights[0, 1] == pytest.approx(aff[OFFSET_0_1, 0, 0] ** 8, rel=1e-5)
    assert transition[0, 1] == pytest.approx(aff[OFFSET_0_1, 0, 0] ** 8 / degree[0], rel=1e-5)


def test_one_step_on_a_1x3_grid_by_hand():
    aff = np.zeros((34, 1, 3), dtype=np.float32)
    aff[OFFSET_0_1, 0, 0], aff[OFFSET_0_1, 0, 1] = 0.5, 0.25  # pairs (0,1) and (1,2)
    aff[OFFSET_0_2, 0, 0] = 0.0  # pair (0,2)
    # W = [[1, .5, 0], [.5, 1, .25], [0, .25, 1]]; T = D^-1 W; walked = T @ v
    walked = random_walk(np.array([[[1.0, 0.0, 0.0]]], dtype=np.float32), transition_matrix(aff, beta=1), steps=1)
    np.testing.assert_allclose(walked[0, 0], [1 / 1.5, 0.5 / 1.75, 0.0], rtol=1e-6)


@pytest.mark.parametrize("log_t", [2, 8])
def test_sparse_walk_matches_psa_dense_on_random_affinities(log_t):
    rng = np.random.default_rng(1)
    aff = rng.random((34, 12, 10), dtype=np.float32)
    cams = cams_with_background(rng.random((2, 12, 10), dtype=np.float32), 16)
    sparse = random_walk(cams, transition_matrix(aff, beta=8), steps=2**log_t)
    dense = dense_random_walk(cams, dense_affinity_matrix(aff, beta=8), log_t)
    assert np.abs(sparse - dense).max() / np.abs(dense).max() < 1e-4


def test_sparse_walk_matches_psa_dense_on_regions():
    rng = np.random.default_rng(2)
    regions = np.zeros((12, 10), dtype=np.int64)
    regions[3:9, 2:7] = 1
    aff = region_affinities(regions, rng)
    cams = np.zeros((1, 12, 10), dtype=np.float32)
    cams[0, 4:6, 3:5] = 1.0  # a seed inside region 1
    cams = cams_with_background(cams, 16)
    sparse = random_walk(cams, transition_matrix(aff, beta=8), steps=256)
    dense = dense_random_walk(cams, dense_affinity_matrix(aff, beta=8), 8)
    assert np.abs(sparse - dense).max() / np.abs(dense).max() < 1e-4
    # the seed spread over its region and not beyond: a non-trivial walk
    assert sparse[1][regions == 1].min() > 10 * sparse[1][regions == 0].max()


def test_torch_walk_matches_scipy_walk():
    rng = np.random.default_rng(4)
    aff = rng.random((34, 9, 7), dtype=np.float32)
    cams = cams_with_background(rng.random((2, 9, 7), dtype=np.float32), 16)
    transition = transition_matrix(aff, beta=8)
    np.testing.assert_allclose(
        random_walk_torch(cams, transition, 16, device="cpu"), random_walk(cams, transition, 16), rtol=1e-5
    )


def test_cams_with_background_stacks_channel_zero():
    cams = np.array([[[0.5, 0.0]], [[0.25, 1.0]]], dtype=np.float32)
    stacked = cams_with_background(cams, power=2)
    assert stacked.shape == (3, 1, 2)
    np.testing.assert_allclose(stacked[0], [[0.25, 0.0]])
    np.testing.assert_array_equal(stacked[1:], cams)


def leaky_scene(stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An object region on a 10x8 grid; the CAM covers it and leaks one grid cell beyond (rows 1-2)."""
    rng = np.random.default_rng(5)
    regions = np.zeros((10, 8), dtype=np.int64)
    regions[3:8, 2:6] = 1
    cam_grid = np.where(regions == 1, 0.3, 0.0)
    cam_grid[4:7, 3:5] = 1.0
    cam_grid[2, 2:6] = 0.3  # the leak: above the object
    aff = region_affinities(regions, rng)
    block = np.ones((stride, stride))
    cams = np.kron(cam_grid, block)[None].astype(np.float32)
    truth = (np.kron(regions, block) * 6).astype(np.uint8)  # class 6
    return cams, aff, truth


@pytest.mark.parametrize("stride", [8, 4])
def test_propagate_fixes_a_leaking_cam(stride):
    cams, aff, truth = leaky_scene(stride)
    config = RandomWalkConfig(stride=stride)
    labels = propagate(cams, aff, np.array([6]), config)
    assert labels.shape == truth.shape and labels.dtype == np.uint8
    no_walk = np.where(cams_with_background(cams, 16).argmax(0) == 1, 6, 0)
    leak = truth != no_walk
    assert leak.sum() == 4 * stride * stride  # the CAM alone is wrong on the leak row
    assert np.all(labels[leak] == 0)
    # bilinear upsampling may move the object's border by up to half a cell, nothing else differs
    obj = truth > 0
    border = binary_dilation(obj, iterations=stride // 2) & ~binary_erosion(obj, iterations=stride // 2)
    np.testing.assert_array_equal(labels[~border], truth[~border])


def test_propagate_matches_psa_dense_pipeline_with_padding():
    rng = np.random.default_rng(6)
    height, width = 45, 37  # not multiples of 8: grid 6 x 5, padded bottom/right
    cams = rng.random((2, height, width), dtype=np.float32)
    aff = rng.random((34, 6, 5), dtype=np.float32)
    ours = propagate_scores(cams, aff, RandomWalkConfig(log_t=3))
    reference = psa_dense_propagate_scores(cams, aff, beta=8, log_t=3, power=16, stride=8)
    assert ours.shape == (3, height, width)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)
    labels = propagate(cams, aff, np.array([2, 15]), RandomWalkConfig(log_t=3))
    np.testing.assert_array_equal(labels, np.array([0, 2, 15], np.uint8)[reference.argmax(0)])


def test_propagate_accepts_cams_on_the_grid():
    rng = np.random.default_rng(7)
    cams = rng.random((1, 6, 5), dtype=np.float32)
    aff = rng.random((34, 6, 5), dtype=np.float32)
    scores = propagate_scores(cams, aff, RandomWalkConfig(log_t=2), image_shape=(45, 37))
    assert scores.shape == (2, 45, 37)
    walked = random_walk(cams_with_background(cams, 16), transition_matrix(aff), steps=4)
    # bilinear x8 (align_corners=False) clamps at the border: the outer half-cells copy the corner cells
    np.testing.assert_allclose(scores[:, :4, :4], np.broadcast_to(walked[:, :1, :1], (2, 4, 4)), rtol=1e-6)
    np.testing.assert_allclose(scores[:, 44, 36], walked[:, 5, 4], rtol=1e-6)
    assert not np.allclose(scores[:, 8, 8], walked[:, 0, 0])


def test_propagate_rejects_shapes_that_do_not_fit():
    rng = np.random.default_rng(8)
    aff = rng.random((34, 6, 5), dtype=np.float32)
    with pytest.raises(BadInputError):
        propagate_scores(rng.random((1, 60, 37), dtype=np.float32), aff)  # grid would be 8 x 5
    with pytest.raises(BadInputError):
        propagate_scores(rng.random((1, 45, 37), dtype=np.float32), aff[:20])
    with pytest.raises(BadInputError):
        propagate(rng.random((1, 45, 37), dtype=np.float32), aff, np.array([1, 2]))
