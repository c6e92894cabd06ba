"""Seeds from image tags: the affinity labels' confident regions vote per superpixel."""

import numpy as np
import pytest

from wsss_core.errors import BadInputError
from wsss_core.graphnet.seeds import UNLABELLED, TagSeedConfig, seeds_from_affinity_labels

N = 255  # neutral


def test_confident_nodes_vote_neutral_majority_nodes_stay_open_and_candidates_are_the_tags():
    # four 2x4 superpixels side by side in a 2x16 image
    superpixels = np.repeat(np.arange(4), 4)[None, :].repeat(2, axis=0)
    labels = np.array([
        [0, 0, 0, 0,  3, 3, 3, N,  N, N, N, 3,  0, 5, 0, 0],
        [0, 0, 0, N,  3, 3, 3, 3,  N, N, N, 0,  0, 0, 5, 0],
    ], dtype=np.uint8)  # class 5 is not a tag of the image: ignored
    seeds = seeds_from_affinity_labels(superpixels, np.array([3]), 6, TagSeedConfig(), labels)

    assert seeds.labels.tolist() == [0, 3, UNLABELLED, 0]  # node 2: 2/8 confident < 0.5; node 3: 6/8 (5 is no tag)
    assert seeds.candidates.tolist() == [[True, False, False, True, False, False]] * 4

    strict = seeds_from_affinity_labels(superpixels, np.array([3]), 6, TagSeedConfig(min_confident_share=0.8), labels)
    assert strict.labels.tolist() == [0, 3, UNLABELLED, UNLABELLED]


def test_an_image_with_no_node_confident_enough_is_seeded_by_its_most_confident_nodes():
    superpixels = np.repeat(np.arange(2), 4)[None, :]
    labels = np.array([[1, N, N, N, N, N, N, N]], dtype=np.uint8)
    seeds = seeds_from_affinity_labels(superpixels, np.array([1]), 2, TagSeedConfig(), labels)
    assert seeds.labels.tolist() == [1, UNLABELLED]


def test_bad_input_names_the_problem():
    superpixels = np.zeros((2, 2), dtype=np.int32)
    with pytest.raises(BadInputError, match="affinity-labels"):
        seeds_from_affinity_labels(superpixels, np.array([1]), 3, TagSeedConfig(), np.zeros((3, 2), np.uint8))
    with pytest.raises(BadInputError, match="tags"):
        seeds_from_affinity_labels(superpixels, np.array([7]), 3, TagSeedConfig(), np.zeros((2, 2), np.uint8))


def test_a_corrective_scribble_outranks_the_cam_and_adds_its_class_to_the_candidates():
    superpixels = np.repeat(np.arange(4), 4)[None, :].repeat(2, axis=0)
    labels = np.array([
        [0, 0, 0, 0,  3, 3, 3, 3,  N, N, N, N,  0, 0, 0, 0],
        [0, 0, 0, 0,  3, 3, 3, 3,  N, N, N, N,  0, 0, 0, 0],
    ], dtype=np.uint8)
    scribble = np.full((2, 16), N, np.uint8)
    scribble[0, 4:7] = 0   # the CAM's class 3 there is background
    scribble[1, 9:11] = 2  # an object the CAM missed, of a class the tags lack
    seeds = seeds_from_affinity_labels(superpixels, np.array([3]), 4, TagSeedConfig(scribbles=True), labels, scribble=scribble)
    assert seeds.labels.tolist() == [0, 0, 2, 0]
    assert seeds.candidates[0].tolist() == [True, False, True, True]
    untouched = seeds_from_affinity_labels(superpixels, np.array([3]), 4, TagSeedConfig(), labels)
    assert untouched.labels.tolist() == [0, 3, UNLABELLED, 0]
