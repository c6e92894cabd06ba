import numpy as np
import pytest

from wsss_core.graphnet.baselines import box_rectangles, nearest_scribble_fill, paint_nodes
from wsss_core.errors import BadInputError

U = 255


def test_nearest_scribble_fill_row():
    scribble = np.array([[1, U, U, 2, U, U]], dtype=np.uint8)
    assert nearest_scribble_fill(scribble).tolist() == [[1, 1, 2, 2, 2, 2]]


def test_nearest_scribble_fill_uses_euclidean_distance():
    scribble = np.full((5, 5), U, dtype=np.uint8)
    scribble[0, 0] = 3
    scribble[4, 3] = 0  # background strokes count like any class
    filled = nearest_scribble_fill(scribble)
    assert filled.dtype == np.uint8
    assert filled[1, 1] == 3 and filled[3, 4] == 0
    assert filled[0, 4] == 3  # distance 4 to (0,0), sqrt(16+1) to (4,3)
    assert filled[4, 0] == 0  # distance 4 to (0,0), 3 to (4,3)
    assert (filled[scribble != U] == scribble[scribble != U]).all()


def test_nearest_scribble_fill_needs_a_scribble():
    with pytest.raises(BadInputError):
        nearest_scribble_fill(np.full((3, 3), U, dtype=np.uint8))


def test_box_rectangles_smaller_on_top():
    boxes = np.array([[2, 1, 1, 3, 3], [1, 0, 0, 4, 3]], dtype=np.int32)
    expected = [
        [1, 1, 1, 1, 0],
        [1, 2, 2, 1, 0],
        [1, 2, 2, 1, 0],
        [0, 0, 0, 0, 0],
    ]
    assert box_rectangles(boxes, (4, 5)).tolist() == expected
    assert box_rectangles(boxes[::-1], (4, 5)).tolist() == expected
    assert box_rectangles(np.zeros((0, 5), dtype=np.int32), (2, 2)).tolist() == [[0, 0], [0, 0]]


def test_paint_nodes_back_to_pixels():
    superpixels = np.array([[0, 0, 1], [2, 2, 1]], dtype=np.int32)
    painted = paint_nodes(superpixels, np.array([3, -1, 0]))
    assert painted.tolist() == [[3, 3, 255], [0, 0, 255]]
    assert painted.dtype == np.uint8
    with pytest.raises(BadInputError):
        paint_nodes(superpixels, np.array([1, 2]))
