"""A mixed dataset's seeds: each image from the labels it carries; pseudo/mixed from its strongest."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_core.errors import BadInputError
from wsss_core.graphnet.mixed import agreed_seeds, combine_seeds, mixed_seeds, seed_source, strongest_mask
from wsss_core.graphnet.seeds import NodeSeeds, seeds_from_affinity_labels, seeds_from_boxes, seeds_from_scribbles

CLASSES = 3
# four superpixels, the quarters of an 8x8 image
SUPERPIXELS = np.repeat(np.repeat(np.array([[0, 1], [2, 3]]), 4, axis=0), 4, axis=1)
SCRIBBLE = np.full((8, 8), 255, dtype=np.uint8)
SCRIBBLE[1, 1:3] = 1  # class 1 in the top-left quarter
SCRIBBLE[6, 5:7] = 0  # background in the bottom-right one
BOXES = np.array([[2, 0, 0, 8, 4]], dtype=np.int32)  # class 2 over the top half
TAGS = np.array([1, 2], dtype=np.int32)
CONFIDENT = np.full((8, 8), 255, dtype=np.uint8)
CONFIDENT[4:, :4] = 2  # the CAM is sure of class 2 in the bottom-left quarter


def seeds_of(scribble=None, boxes=None, confident=CONFIDENT):
    return mixed_seeds(SUPERPIXELS, CLASSES, TAGS, scribble=scribble, boxes=boxes, affinity_labels=confident)


def same(a: NodeSeeds, b: NodeSeeds) -> bool:
    return np.array_equal(a.labels, b.labels) and np.array_equal(a.candidates, b.candidates)


def test_each_label_combination_seeds_from_its_strongest_labels():
    assert same(seeds_of(scribble=SCRIBBLE), seeds_from_scribbles(SUPERPIXELS, SCRIBBLE, CLASSES))
    assert same(seeds_of(boxes=BOXES), seeds_from_boxes(SUPERPIXELS, BOXES, CLASSES))
    tags_only = seeds_from_affinity_labels(SUPERPIXELS, TAGS, CLASSES, affinity_labels=CONFIDENT)
    assert same(seeds_of(), tags_only) and same(seeds_of(boxes=BOXES[:0]), tags_only)  # no box: tags
    assert seeds_of().labels.tolist() == [-1, -1, 2, -1]
    both = seeds_of(scribble=SCRIBBLE, boxes=BOXES)
    # the scribble's class wins on its node, the box's centre seeds class 2, the background lies below it
    assert both.labels.tolist() == [1, 2, 0, 0]
    assert both.candidates[0].tolist() == [True, True, True] and both.candidates[2].tolist() == [True, False, False]
    assert [seed_source(s, b) for s, b in [(True, True), (True, False), (False, True), (False, False)]] == [
        "boxes+scribbles", "scribbles", "boxes", "tags"]


def test_a_tag_only_image_without_its_cam_labels_is_a_bad_input():
    with pytest.raises(BadInputError, match="affinity labels"):
        seeds_of(confident=None)


def test_combined_seeds_keep_each_seed_among_its_candidates():
    strong = NodeSeeds(np.array([1, -1]), np.array([[True, True, False], [True, True, False]]))
    weak = NodeSeeds(np.array([2, 0]), np.array([[True, False, True], [True, False, True]]))
    combined = combine_seeds(strong, weak)
    assert combined.labels.tolist() == [1, 0]
    assert combined.candidates.tolist() == [[True, True, True], [True, False, True]]


def test_a_full_mask_wins_over_every_weak_label_and_an_images_own_tier_over_the_shared_gcn():
    shared = np.zeros((4, 4), dtype=np.uint8)
    drawn = np.ones((4, 4), dtype=np.uint8)
    manual = np.full((4, 4), 2, dtype=np.uint8)
    assert strongest_mask(None, [None, None], shared)[1] == "shared"  # a tag-only image
    assert strongest_mask(None, [None, drawn], shared)[1] == "tier-1"  # a boxed one
    mask, source = strongest_mask(manual, [drawn], shared)
    assert source == "manual" and np.array_equal(mask, manual)
    with pytest.raises(BadInputError, match="shape"):
        strongest_mask(manual[:2], [], shared)


def test_a_tag_only_image_keeps_the_cam_seeds_the_drawn_images_gcn_agrees_with():
    cam = NodeSeeds(np.array([1, 0, 2, -1]), np.ones((4, 3), dtype=bool))
    drawn = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.9, 0.05, 0.05]])
    agreed = agreed_seeds(cam, drawn)
    assert agreed.labels.tolist() == [1, -1, 2, -1]  # node 1: the CAM says background, the GCN class 1
    assert np.array_equal(agreed.candidates, cam.candidates)
    nowhere = agreed_seeds(cam, np.eye(3)[[0, 1, 1, 2]])
    assert np.array_equal(nowhere.labels, cam.labels)  # no agreement at all: the CAM's seeds stay
