import numpy as np
import pytest

from wsss_core.errors import BadInputError
from wsss_core.graphnet.seeds import (
    drawn_classes_only,
    BoxSeedConfig,
    NodeSeeds,
    box_owner_map,
    box_pixel_seeds,
    box_seeds,
    scribble_seeds,
)

U = 255  # unlabelled scribble pixel


def test_scribble_majority_ties_and_untouched_nodes():
    superpixels = np.array(
        [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [2, 2, 2, 2, 2, 2],
        ],
        dtype=np.int32,
    )
    scribble = np.array(
        [
            [1, 1, 2, 2, 1, U],
            [1, 2, U, 1, 2, U],
            [U, U, U, U, U, U],
        ],
        dtype=np.uint8,
    )
    seeds = scribble_seeds(superpixels, scribble, num_classes=3)
    # node 0: three 1s vs two 2s -> 1; node 1: two 1s vs two 2s -> tie -> 1; node 2: untouched
    assert seeds.labels.tolist() == [1, 1, -1]
    assert seeds.labels.dtype == np.int64
    assert seeds.candidates.shape == (3, 3) and seeds.candidates.all()
    assert seeds.labelled.tolist() == [True, True, False]


def test_scribble_background_class_counts_and_n_nodes_override():
    superpixels = np.array([[0, 1]], dtype=np.int32)
    seeds = scribble_seeds(superpixels, np.array([[0, U]], dtype=np.uint8), num_classes=2, n_nodes=4)
    assert seeds.labels.tolist() == [0, -1, -1, -1]


@pytest.mark.parametrize(
    "scribble",
    [np.array([[0, 7]], dtype=np.uint8), np.array([[0, 1, 1]], dtype=np.uint8)],
)
def test_scribble_rejects_bad_values_and_shapes(scribble):
    with pytest.raises(BadInputError):
        scribble_seeds(np.array([[0, 1]], dtype=np.int32), scribble, num_classes=3)


def test_node_seeds_checks_shapes():
    with pytest.raises(ValueError):
        NodeSeeds(np.zeros(3, dtype=np.int64), np.ones((2, 2), dtype=bool))


BIG = [1, 2, 2, 12, 12]  # class 1, 10x10
SMALL = [2, 8, 8, 14, 14]  # class 2, 6x6, overlaps BIG on [8:12, 8:12]


def test_owner_map_smaller_box_on_top():
    owner = box_owner_map(np.array([SMALL, BIG]), (20, 20))  # order in the list does not matter
    assert owner[10, 10] == 0 and owner[3, 3] == 1 and owner[0, 0] == -1
    assert (owner == 0).sum() == 36 and (owner == 1).sum() == 100 - 16


def test_pixel_seeds_outside_background_overlap_and_centre_prior():
    seeds = box_pixel_seeds(np.array([BIG, SMALL]), (20, 20), num_classes=3)
    outside = np.ones((20, 20), dtype=bool)
    outside[2:12, 2:12] = outside[8:14, 8:14] = False
    assert (seeds[outside] == 0).all()
    # centre priors: BIG 10x10 -> round(10*sqrt(.1)) = 3 -> 3x3 at rows/cols 5..7;
    # SMALL 6x6 -> 2x2 at rows/cols 10..11 (inside the overlap, which SMALL owns).
    assert (seeds == 1).sum() == 9 and (seeds[5:8, 5:8] == 1).all()
    assert (seeds == 2).sum() == 4 and (seeds[10:12, 10:12] == 2).all()
    assert (seeds == -1).sum() == (100 + 36 - 16) - 9 - 4


def test_centre_prior_area_and_position_follow_the_fraction():
    box = np.array([[1, 0, 0, 40, 30]])  # 40 wide, 30 tall
    for fraction in (0.1, 0.25):
        seeds = box_pixel_seeds(box, (30, 40), 2, config=BoxSeedConfig(centre_fraction=fraction))
        rows, cols = np.nonzero(seeds == 1)
        assert abs(len(rows) / 1200 - fraction) < 0.015
        assert abs(rows.mean() - 14.5) <= 0.5 and abs(cols.mean() - 19.5) <= 0.5


def test_cam_threshold_is_relative_to_the_box_crop():
    shape = (10, 10)
    cam = np.zeros((3, *shape))
    cam[1, 0, 0] = 100.0  # a strong peak outside the box must not matter
    cam[1, 2:8, 2:8] = np.linspace(0, 2, 6)[None, :]  # columns 2..7: 0, .4, .8, 1.2, 1.6, 2.0
    cam[2, 2:8, 2:8] = 50.0  # another class's CAM is ignored
    config = BoxSeedConfig(centre_fraction=0.0)
    seeds = box_pixel_seeds(np.array([[1, 2, 2, 8, 8]]), shape, 3, cam=cam, config=config)
    # normalised: 0, .2, .4, .6, .8, 1.0 -> >= .75 in the last two columns only
    assert (seeds[2:8, 6:8] == 1).all() and (seeds[2:8, 2:6] == -1).all()
    assert (seeds == 1).sum() == 12
    strict = box_pixel_seeds(
        np.array([[1, 2, 2, 8, 8]]), shape, 3, cam=cam, config=BoxSeedConfig(cam_threshold=0.9, centre_fraction=0.0)
    )
    assert (strict[2:8, 7] == 1).all() and (strict == 1).sum() == 6


def test_box_seeds_node_labels_and_candidates():
    # 4x4 grid of 4x4-pixel superpixels (16 nodes) on a 16x16 image.
    superpixels = (np.arange(16).reshape(4, 4).repeat(4, 0).repeat(4, 1)).astype(np.int32)
    # class 2 box over nodes 5, 6, 9, 10 exactly plus two pixel columns of nodes 7, 11
    boxes = np.array([[2, 4, 4, 14, 12]])
    seeds = box_seeds(superpixels, boxes, num_classes=3)
    labels = seeds.labels.reshape(4, 4)
    # nodes entirely outside every box: background
    assert labels[0].tolist() == [0, 0, 0, 0] and labels[3].tolist() == [0, 0, 0, 0]
    assert labels[1, 0] == 0 and labels[2, 0] == 0
    # half inside the box: not background; no seeded pixel there -> unlabelled
    assert labels[1, 3] == -1 and labels[2, 3] == -1
    # the centre prior (10x8 box -> 3x3 at rows 6..8, cols 7..9) lands in nodes 5, 6, 9, 10
    assert labels[1, 1] == 2 and labels[1, 2] == 2 and labels[2, 1] == 2 and labels[2, 2] == 2
    touched = {5, 6, 7, 9, 10, 11}
    assert seeds.candidates[:, 0].all()
    assert set(np.flatnonzero(seeds.candidates[:, 2])) == touched
    assert not seeds.candidates[:, 1].any()


def test_box_seeds_cam_wins_majority_and_nearly_outside_counts_as_background():
    superpixels = np.zeros((10, 20), dtype=np.int32)
    superpixels[:, 10:] = 1
    boxes = np.array([[1, 0, 0, 9, 10], [1, 19, 0, 20, 10]])  # node 1 has 10 of 100 pixels in a box
    cam = np.zeros((2, 10, 20))
    cam[1, :, :9] = 1.0  # CAM covers the whole first box
    config = BoxSeedConfig(background_outside_fraction=0.9)
    seeds = box_seeds(superpixels, boxes, num_classes=2, cam=cam, config=config)
    assert seeds.labels.tolist() == [1, 0]
    assert seeds.candidates.tolist() == [[True, True], [True, True]]
    # at the default 0.95, node 1 (90% outside) may not vote background: the 3 centre-prior
    # pixels of the thin box (10 tall -> 3 rows, 1 wide) decide.
    assert box_seeds(superpixels, boxes, num_classes=2, cam=cam).labels.tolist() == [1, 1]


@pytest.mark.parametrize(
    "boxes",
    [
        np.array([[0, 0, 0, 2, 2]]),  # background class
        np.array([[3, 0, 0, 2, 2]]),  # beyond num_classes
        np.array([[1, 5, 0, 5, 2]]),  # empty
        np.array([[1, 0, 0, 2]]),  # wrong width
    ],
)
def test_box_seeds_reject_bad_boxes(boxes):
    with pytest.raises(BadInputError):
        box_seeds(np.zeros((4, 4), dtype=np.int32), boxes, num_classes=3)


def test_box_seeds_rejects_cam_of_wrong_shape():
    with pytest.raises(BadInputError):
        box_seeds(np.zeros((4, 4), dtype=np.int32), np.array([[1, 0, 0, 2, 2]]), 3, cam=np.zeros((2, 4, 4)))


def test_drawn_classes_only_keeps_the_scribbled_classes():
    superpixels = np.array([[0, 1, 2, 3]], dtype=np.int32)
    scribble = np.array([[0, 255, 3, 255]], dtype=np.uint8)
    seeds = drawn_classes_only(scribble_seeds(superpixels, scribble, num_classes=5))
    assert seeds.labels.tolist() == [0, -1, 3, -1]
    assert seeds.candidates.tolist() == [[True, False, False, True, False]] * 4
