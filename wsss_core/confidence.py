"""How sure a pseudo mask is of itself, without ground truth: one score per image.

A mask is the argmax of class probabilities (GCN node probabilities, normalised CAM or
walked scores, a segmentation network's softmax). Its confidence summarises, over its
pixels, how far that argmax stood above the rest:

- ``margin`` (the default): mean over pixels of top-1 minus top-2 probability. It is 0
  where two classes tie, whatever C is, so an image whose object is torn between two
  classes scores low even when the background around it is sure.
- ``max_probability``: mean over pixels of the top-1 probability; its floor is 1/C, so
  it mixes the number of classes into the score.

Both are stored with each mask (an attribute of its Zarr array, written with it, so a
recomputed mask carries a recomputed score and markers need no extra rule);
``benchmarks/confidence.py`` measures how each ranks images like their true IoU does.
Baseline masks (box rectangles, nearest scribbles) have no probabilities: no score (None).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the scores are pure numpy; only read_confidence needs a workspace
    from wsss_core.store import Workspace

ATTRIBUTE = "confidence"
MEASURES = ("margin", "max_probability")
DEFAULT_MEASURE = "margin"


def normalise_scores(scores: np.ndarray) -> np.ndarray:
    """(C, ...) non-negative scores -> probabilities summing to 1 along axis 0 (uniform where all are 0)."""
    scores = np.maximum(np.asarray(scores, dtype=np.float32), 0.0)
    total = scores.sum(axis=0, keepdims=True)
    return np.where(total > 0, scores / np.maximum(total, 1e-12), np.float32(1.0 / max(len(scores), 1)))


def confidence_scores(probabilities: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float] | None:
    """Every measure of MEASURES for (C, ...) class probabilities (axis 0 = class).

    weights: one per position (e.g. the pixel count of each superpixel node), default 1.
    A single class is certain (1.0 for both); no positions (or zero total weight): None.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim < 1 or probabilities.shape[0] == 0:
        raise ValueError(f"probabilities need a class axis first, got shape {probabilities.shape}")
    flat = probabilities.reshape(probabilities.shape[0], -1)
    w = np.ones(flat.shape[1], dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape[0] != flat.shape[1]:
        raise ValueError(f"{w.shape[0]} weights for {flat.shape[1]} positions")
    if flat.shape[1] == 0 or w.sum() <= 0:
        return None
    if flat.shape[0] == 1:
        return {"margin": 1.0, "max_probability": 1.0}
    top2 = -np.partition(-flat, 1, axis=0)[:2]  # the two largest per position
    return {
        "margin": float(np.average(top2[0] - top2[1], weights=w)),
        "max_probability": float(np.average(top2[0], weights=w)),
    }


def score_confidence(scores: np.ndarray) -> dict[str, float] | None:
    """Scores of a mask that is the argmax of (C, H, W) non-negative scores (CAMs, walked scores)."""
    return confidence_scores(normalise_scores(scores))


def node_confidence(superpixels: np.ndarray, node_probabilities: np.ndarray) -> dict[str, float] | None:
    """Scores of a mask painted from (n_nodes, C) node probabilities: each node weighs its pixel count."""
    counts = np.bincount(np.asarray(superpixels).ravel(), minlength=len(node_probabilities))
    return confidence_scores(np.asarray(node_probabilities).T, counts[: len(node_probabilities)])


def mask_attributes(scores: dict[str, float] | None) -> dict[str, Any]:
    """The attributes a mask array is written with (none without a score)."""
    return {ATTRIBUTE: scores} if scores is not None else {}


def read_confidence(
    workspace: Workspace, stage: str, measure: str = DEFAULT_MEASURE, image_ids: Iterable[str] | None = None
) -> dict[str, float | None]:
    """{image id: score} of a mask stage, for its done images of the dataset as it is now (or
    image_ids); None where the mask has no score (a baseline, or a mask written before scores
    were). An image no split list names any more is in no result, though its mask stays until gc."""
    if measure not in MEASURES:
        raise ValueError(f"unknown confidence measure {measure!r} (valid: {', '.join(MEASURES)})")
    ids = sorted(workspace.done_ids(stage) & set(workspace.image_ids()) if image_ids is None else image_ids)
    found: dict[str, float | None] = {}
    for image_id in ids:
        value = (workspace.array_attributes(stage, image_id).get(ATTRIBUTE) or {}).get(measure)
        found[image_id] = float(value) if value is not None else None
    return found


def has_scores(scores: dict[str, float | None]) -> bool:
    return any(value is not None for value in scores.values())


def worst(scores: dict[str, float | None], n: int) -> list[tuple[str, float]]:
    """The n lowest-scored images, lowest first (ties by id); unscored ones left out."""
    scored = [(image_id, value) for image_id, value in scores.items() if value is not None]
    return sorted(scored, key=lambda item: (item[1], item[0]))[: max(n, 0)]
