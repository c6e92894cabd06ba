import numpy as np
import pytest

from wsss_core.confidence import (
    confidence_scores,
    node_confidence,
    normalise_scores,
    read_confidence,
    score_confidence,
    worst,
)
from wsss_core.psa.masks import cam_mask, cam_scores, score_mask
from wsss_core.store import Workspace


def sure_probabilities(labels: np.ndarray, classes: int, sharpness: float = 0.9) -> np.ndarray:
    """(C, H, W) probabilities that put `sharpness` on each pixel's label."""
    rest = (1 - sharpness) / (classes - 1)
    probs = np.full((classes, *labels.shape), rest, np.float32)
    np.put_along_axis(probs, labels[None], sharpness, axis=0)
    return probs


def corrupt(probs: np.ndarray, rng: np.random.Generator, share: float = 0.5) -> np.ndarray:
    """Half the pixels' probabilities replaced by near-ties between random classes."""
    noisy = probs.copy()
    pick = rng.random(probs.shape[1:]) < share
    noise = rng.dirichlet(np.ones(len(probs)) * 5, size=int(pick.sum())).T.astype(np.float32)
    noisy[:, pick] = noise
    return noisy


@pytest.mark.parametrize("measure", ["margin", "max_probability"])
def test_a_corrupted_mask_ranks_below_a_good_one(measure):
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 50), np.int64)
    labels[10:30, 15:40] = 2
    good = sure_probabilities(labels, 4)
    bad = corrupt(good, rng)
    assert confidence_scores(bad)[measure] < confidence_scores(good)[measure] - 0.2
    assert worst({"good": confidence_scores(good)[measure], "bad": confidence_scores(bad)[measure]}, 1) == [
        ("bad", pytest.approx(confidence_scores(bad)[measure]))
    ]


def test_margin_and_max_probability_values():
    probs = np.array([[0.6, 0.5], [0.3, 0.5], [0.1, 0.0]], np.float32)  # 2 pixels, 3 classes
    scores = confidence_scores(probs)
    assert scores["margin"] == pytest.approx((0.3 + 0.0) / 2)
    assert scores["max_probability"] == pytest.approx((0.6 + 0.5) / 2)
    weighted = confidence_scores(probs, weights=np.array([3, 1]))
    assert weighted["margin"] == pytest.approx(0.3 * 3 / 4)


def test_single_class_is_certain_and_empty_has_no_score():
    assert confidence_scores(np.ones((1, 5, 5))) == {"margin": 1.0, "max_probability": 1.0}
    assert confidence_scores(np.zeros((3, 0, 4))) is None
    assert confidence_scores(np.ones((3, 2)), weights=np.zeros(2)) is None
    with pytest.raises(ValueError):
        confidence_scores(np.zeros((0, 4)))
    with pytest.raises(ValueError):
        confidence_scores(np.ones((2, 3)), weights=np.ones(2))


def test_scores_are_normalised_and_all_zero_pixels_count_as_ties():
    scores = np.array([[2.0, 0.0], [0.0, 0.0]], np.float32)
    probs = normalise_scores(scores)
    assert np.allclose(probs.sum(axis=0), 1) and np.allclose(probs[:, 1], 0.5)
    assert score_confidence(scores)["margin"] == pytest.approx(0.5)


def test_node_confidence_weighs_nodes_by_their_pixels():
    superpixels = np.array([[0, 0, 0], [0, 0, 1]])  # node 0: 5 pixels, node 1: 1
    nodes = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    assert node_confidence(superpixels, nodes)["margin"] == pytest.approx(5 / 6)


def test_cam_scores_give_the_cam_mask():
    rng = np.random.default_rng(1)
    cams = rng.random((2, 6, 7)).astype(np.float32)
    classes = np.array([3, 5])
    assert np.array_equal(score_mask(cam_scores(cams, classes), classes), cam_mask(cams, classes))
    empty = cam_mask(np.zeros((0, 6, 7), np.float32), np.zeros(0, np.int64))
    assert empty.shape == (6, 7) and not empty.any()


def test_scores_are_stored_with_the_mask_and_replaced_with_it(tmp_path):
    ws = Workspace(tmp_path / "ws")
    mask = np.zeros((4, 5), np.uint8)
    ws.write_array("pseudo/x", "a", mask, attributes={"confidence": {"margin": 0.9, "max_probability": 0.95}})
    ws.write_array("pseudo/x", "b", mask)  # a baseline: no probabilities, no score
    assert read_confidence(ws, "pseudo/x", image_ids=["a", "b"]) == {"a": 0.9, "b": None}
    ws.write_array("pseudo/x", "a", mask, attributes={"confidence": {"margin": 0.2, "max_probability": 0.5}})
    assert read_confidence(ws, "pseudo/x", "max_probability", image_ids=["a"]) == {"a": 0.5}
    ws.write_array("pseudo/x", "a", mask)  # recomputed without a score: the old one goes
    assert read_confidence(ws, "pseudo/x", image_ids=["a"]) == {"a": None}
    assert np.array_equal(ws.read_array("pseudo/x", "a"), mask)
    with pytest.raises(ValueError, match="unknown confidence measure"):
        read_confidence(ws, "pseudo/x", "entropy")


def test_worst_lists_the_lowest_scores_first_without_unscored():
    scores = {"a": 0.9, "b": None, "c": 0.1, "d": 0.5}
    assert worst(scores, 2) == [("c", 0.1), ("d", 0.5)]
    assert worst(scores, 0) == [] and worst({}, 3) == []
