"""Simple pseudo masks to compare GraphNet against, and node labels back to pixels."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError
from wsss_core.graphnet.seeds import box_owner_map


def nearest_scribble_fill(scribble: np.ndarray) -> np.ndarray:
    """HxW uint8: every pixel takes the class of its nearest scribble pixel (Euclidean)."""
    scribble = np.asarray(scribble)
    if scribble.ndim != 2:
        raise BadInputError("scribble", f"expected an HxW map, got shape {scribble.shape}")
    unlabelled = scribble == IGNORE_INDEX
    if unlabelled.all():
        raise BadInputError("scribble", "no scribble pixel")
    # EDT measures the distance to the nearest zero, i.e. to the nearest scribble pixel.
    _, (rows, cols) = distance_transform_edt(unlabelled, return_indices=True)
    return scribble[rows, cols].astype(np.uint8)


def box_rectangles(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW uint8: each box filled with its class, smaller boxes on top, 0 outside every box."""
    boxes = np.asarray(boxes).reshape(-1, 5)
    owner = box_owner_map(boxes, shape)
    classes = np.concatenate([[0], boxes[:, 0]]).astype(np.uint8)
    return classes[owner + 1]


def baseline_from_scribbles(scribble: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The scribbles' baseline mask (SUPERVISIONS["scribbles"]): nearest-scribble fill."""
    return nearest_scribble_fill(scribble)


def baseline_from_boxes(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The boxes' baseline mask (SUPERVISIONS["boxes"]): the filled rectangles."""
    return box_rectangles(boxes, shape)


def paint_nodes(superpixels: np.ndarray, node_labels: np.ndarray) -> np.ndarray:
    """HxW uint8 mask from per-node labels; label -1 (unlabelled) becomes 255."""
    superpixels = np.asarray(superpixels)
    node_labels = np.asarray(node_labels)
    if superpixels.size and int(superpixels.max()) >= len(node_labels):
        problem = f"label {int(superpixels.max())} but only {len(node_labels)} node labels"
        raise BadInputError("superpixels", problem)
    if node_labels.size and int(node_labels.max()) >= IGNORE_INDEX:
        raise ValueError(f"node labels must be below {IGNORE_INDEX}")
    painted = np.where(node_labels < 0, IGNORE_INDEX, node_labels).astype(np.uint8)
    return painted[superpixels]
