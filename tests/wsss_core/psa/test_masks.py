import numpy as np
import pytest

from wsss_core.crf import CRFConfig
from wsss_core.errors import BadInputError
from wsss_core.psa.masks import CamMaskConfig, cam_mask, crf_score_mask, keep_confident_labels, score_mask


def test_cam_mask_is_argmax_over_a_fixed_background_score():
    cams = np.zeros((2, 2, 3), np.float32)
    cams[0, 0, 0] = 0.9  # class 4 wins
    cams[1, 0, 1] = 0.5  # class 7 wins
    cams[0, 1, 2], cams[1, 1, 2] = 0.3, 0.35  # class 7 just above class 4
    cams[0, 1, 0] = 0.1  # below the background score
    mask = cam_mask(cams, np.array([4, 7]), CamMaskConfig(background_score=0.2))
    assert mask.tolist() == [[4, 7, 0], [0, 0, 7]]
    assert mask.dtype == np.uint8
    assert cam_mask(np.zeros((0, 2, 3)), np.array([])).tolist() == [[0, 0, 0]] * 2  # no tags: background
    with pytest.raises(BadInputError):
        cam_mask(cams, np.array([4]))


def test_score_mask_maps_channels_to_classes():
    scores = np.zeros((3, 1, 3), np.float32)
    scores[0, 0, 0] = scores[1, 0, 1] = scores[2, 0, 2] = 1.0
    assert score_mask(scores, np.array([2, 5])).tolist() == [[0, 2, 5]]


def test_crf_score_mask_keeps_a_clear_two_region_split():
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 200
    scores = np.zeros((2, 16, 16), np.float32)
    scores[0, :, :8], scores[1, :, 8:] = 0.8, 0.8  # unnormalised walked scores
    scores += 0.01
    mask = crf_score_mask(image, scores, np.array([3]), CRFConfig(iterations=3))
    assert (mask[:, :8] == 0).all() and (mask[:, 8:] == 3).all()


def test_keep_confident_labels_settles_confident_pixels_and_leaves_the_band_to_the_walk():
    scores = np.zeros((3, 2, 3), np.float32)
    scores[2] = 0.9  # the walk says class 6 everywhere
    confident = np.array([[0, 4, 255], [6, 255, 9]], np.uint8)  # 9 is no tag of this image: left to the walk
    kept = keep_confident_labels(scores, np.array([4, 6]), confident)
    assert score_mask(kept, np.array([4, 6])).tolist() == [[0, 4, 6], [6, 6, 6]]
    assert kept[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and np.array_equal(kept[:, 0, 2], scores[:, 0, 2])
    assert scores[2, 0, 0] == np.float32(0.9)  # the input is not changed
    with pytest.raises(BadInputError, match="affinity labels"):
        keep_confident_labels(scores, np.array([4, 6]), confident[:, :2])
