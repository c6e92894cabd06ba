"""AffinityNet (PSA, Ahn & Kwak 2018) without the network: confident labels, pair labels, loss.

Layout used throughout: affinities and pair labels are (P, h, w) grids (a leading batch
axis for the torch functions), P = len(neighbour_offsets(radius)) (34 for radius 5).
Entry [k, y, x] is the pair from (y, x) to (y + dy_k, x + dx_k). Entries whose
destination falls outside the map are not pairs: labels are 0 there and affinities
are ignored. (PSA flattens only the sources whose every destination is inside, i.e.
rows [0, h-r+1) and columns [r-1, w-r+1); the grid layout keeps every pair inside.)

Label maps hold class indices: 0 background, tags for foreground, 255 neutral.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from wsss_core.crf import CRFConfig, crf_inference
from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError

NO_SCORE = 1e-5  # PSA: a pixel whose every CRF score is below this (crop padding) is neutral
LOSS_EPS = 1e-5  # PSA train_aff.py guard inside the logs and the pair counts


@dataclass(frozen=True)
class AffinityConfig:
    """PSA's affinity-label recipe: alpha 4 for confident foreground, 32 for confident background."""

    radius: int = 5
    alpha_fg: float = 4.0
    alpha_bg: float = 32.0
    crf: CRFConfig = field(default_factory=CRFConfig)
    stride: int = 8


def neighbour_offsets(radius: int = 5) -> np.ndarray:
    """PSA's search_dst: (P, 2) int64 (dy, dx), one half-plane, dy^2 + dx^2 < radius^2.

    Order as PSA: (0, 1) .. (0, r-1), then rows dy = 1 .. r-1 with dx = -(r-1) .. r-1.
    """
    if radius < 2:
        raise BadInputError("radius", f"must be >= 2, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        for dx in range(-radius + 1, radius):
            if dx * dx + dy * dy < radius * radius:
                offsets.append((dy, dx))
    return np.asarray(offsets, dtype=np.int64)


def pair_slices(dy: int, dx: int, height: int, width: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(source, destination) slices of the sources whose destination (y+dy, x+dx) is inside."""
    rows = slice(0, max(0, height - dy))
    x_start = max(0, -dx)
    x_stop = max(x_start, width - max(0, dx))
    source = (rows, slice(x_start, x_stop))
    destination = (slice(dy, dy + rows.stop), slice(x_start + dx, x_stop + dx))
    return source, destination


def destination_inside_mask(height: int, width: int, radius: int = 5) -> np.ndarray:
    """(P, h, w) bool: True where the pair's destination lies inside the map."""
    offsets = neighbour_offsets(radius)
    mask = np.zeros((len(offsets), height, width), dtype=bool)
    for k, (dy, dx) in enumerate(offsets):
        source, _ = pair_slices(int(dy), int(dx), height, width)
        mask[k][source] = True
    return mask


def background_score(cams: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - max_k cams)^alpha as (H, W) float32; all ones when there is no class."""
    if cams.shape[0] == 0:
        return np.ones(cams.shape[1:], dtype=np.float32)
    return np.power(1.0 - np.max(cams, axis=0), alpha).astype(np.float32)


def check_cams(cams: np.ndarray, tags: np.ndarray | None = None) -> None:
    """Raise BadInputError unless cams is (K, H, W) in [0, 1] and tags (if given) fit it."""
    if cams.ndim != 3:
        raise BadInputError("cams", f"expected (K, H, W), got shape {cams.shape}")
    if not np.all(np.isfinite(cams)) or cams.min(initial=0.0) < 0 or cams.max(initial=0.0) > 1:
        raise BadInputError("cams", "values must be finite and in [0, 1]")
    if tags is not None:
        if tags.shape != (cams.shape[0],):
            raise BadInputError("tags", f"expected {cams.shape[0]} tags (one per CAM), got shape {tags.shape}")
        if len(np.unique(tags)) != len(tags) or np.any(tags < 1) or np.any(tags >= IGNORE_INDEX):
            raise BadInputError("tags", f"must be distinct foreground class indices in 1..254, got {tags.tolist()}")


def crf_scores_with_alpha(image: np.ndarray, cams: np.ndarray, alpha: float, crf: CRFConfig) -> np.ndarray:
    """PSA's _crf_with_alpha: dCRF of [(1 - max cams)^alpha, cams] -> (K+1, H, W) float32."""
    scores = np.concatenate([background_score(cams, alpha)[None], cams.astype(np.float32)], axis=0)
    return crf_inference(image, scores, crf)


def confident_scores(
    image: np.ndarray, cams: np.ndarray, config: AffinityConfig = AffinityConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """(low-alpha, high-alpha) CRF scores, each (K+1, H, W) with background as channel 0."""
    check_cams(cams)
    low = crf_scores_with_alpha(image, cams, config.alpha_fg, config.crf)
    high = crf_scores_with_alpha(image, cams, config.alpha_bg, config.crf)
    return low, high


def labels_from_confident_scores(low_alpha: np.ndarray, high_alpha: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """PSA's label rule (voc12/data.py VOC12AffDataset) -> (H, W) uint8.

    label = argmax(low); where that is background -> 255; where argmax(high) is
    background -> 0 (overrides); where no channel scores above 1e-5 -> 255.
    Channel k >= 1 becomes class tags[k-1].
    """
    tags = np.asarray(tags, dtype=np.int64)
    class_of_channel = np.concatenate([[0], tags]).astype(np.uint8)
    low_argmax = np.argmax(low_alpha, axis=0)
    label = class_of_channel[low_argmax]
    label[low_argmax == 0] = IGNORE_INDEX
    label[np.argmax(high_alpha, axis=0) == 0] = 0
    no_score = np.maximum(low_alpha.max(axis=0), high_alpha.max(axis=0)) < NO_SCORE
    label[no_score] = IGNORE_INDEX
    return label


def confident_label_map(
    image: np.ndarray, cams: np.ndarray, tags: np.ndarray, config: AffinityConfig = AffinityConfig()
) -> np.ndarray:
    """Full-resolution confident labels: tags (fg), 0 (bg), 255 (neutral) as (H, W) uint8.

    cams: (K, H, W) in [0, 1] for the image's tag classes, tags: (K,) their class indices.
    """
    tags = np.asarray(tags, dtype=np.int64)
    check_cams(cams, tags)
    low, high = confident_scores(image, cams, config)
    return labels_from_confident_scores(low, high, tags)


def downsample_scores(scores: np.ndarray, stride: int) -> np.ndarray:
    """Block mean over stride x stride blocks, partial blocks zero-padded (PSA's AvgPool2d / avg_pool2d).

    (C, H, W) -> (C, ceil(H/stride), ceil(W/stride)) float32.
    """
    channels, height, width = scores.shape
    small_h, small_w = -(-height // stride), -(-width // stride)
    padded = np.zeros((channels, small_h * stride, small_w * stride), dtype=np.float32)
    padded[:, :height, :width] = scores
    return padded.reshape(channels, small_h, stride, small_w, stride).mean(axis=(2, 4))


def confident_label_map_at_stride(
    image: np.ndarray, cams: np.ndarray, tags: np.ndarray, config: AffinityConfig = AffinityConfig()
) -> np.ndarray:
    """PSA's training labels exactly: CRF scores block-averaged to the stride grid, then the label rule."""
    tags = np.asarray(tags, dtype=np.int64)
    check_cams(cams, tags)
    low, high = confident_scores(image, cams, config)
    return labels_from_confident_scores(
        downsample_scores(low, config.stride), downsample_scores(high, config.stride), tags
    )


def downsample_labels(label_map: np.ndarray, stride: int) -> np.ndarray:
    """(H, W) uint8 labels -> (ceil(H/s), ceil(W/s)) by majority vote per stride x stride block.

    Partial blocks count only their pixels; ties go to the smaller label (background,
    then classes, then neutral). Use this after cropping a stored full-resolution map;
    PSA itself averages the CRF scores instead (confident_label_map_at_stride).
    """
    if label_map.ndim != 2:
        raise BadInputError("label_map", f"expected (H, W), got shape {label_map.shape}")
    height, width = label_map.shape
    small_h, small_w = -(-height // stride), -(-width // stride)
    block = (np.arange(height)[:, None] // stride) * small_w + np.arange(width)[None, :] // stride
    counts = np.bincount(
        (block * 256 + label_map.astype(np.int64)).ravel(), minlength=small_h * small_w * 256
    ).reshape(small_h * small_w, 256)
    return np.argmax(counts, axis=1).astype(np.uint8).reshape(small_h, small_w)


def pair_labels(label_map_small: np.ndarray, radius: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSA's ExtractAffinityLabelInRadius on the grid layout -> (bg_pos, fg_pos, neg), each (P, h, w) float32.

    bg_pos: both background; fg_pos: same foreground class; neg: different labels.
    Pairs touching a neutral (255) position or leaving the map are 0 in all three.
    """
    if label_map_small.ndim != 2:
        raise BadInputError("label_map_small", f"expected (h, w), got shape {label_map_small.shape}")
    height, width = label_map_small.shape
    offsets = neighbour_offsets(radius)
    bg_pos, fg_pos, neg = (np.zeros((len(offsets), height, width), dtype=np.float32) for _ in range(3))
    for k, (dy, dx) in enumerate(offsets):
        source, destination = pair_slices(int(dy), int(dx), height, width)
        label_from, label_to = label_map_small[source], label_map_small[destination]
        valid = (label_from != IGNORE_INDEX) & (label_to != IGNORE_INDEX)
        same = label_from == label_to
        bg_pos[k][source] = valid & same & (label_from == 0)
        fg_pos[k][source] = valid & same & (label_from != 0)
        neg[k][source] = valid & ~same
    return bg_pos, fg_pos, neg


def affinities_from_features(features: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """AffinityNet's a_ij = exp(-mean_c |f_i - f_j|): (B, D, h, w) -> (B, P, h, w); 0 where j is outside."""
    if features.ndim != 4:
        raise BadInputError("features", f"expected (B, D, h, w), got shape {tuple(features.shape)}")
    height, width = features.shape[2:]
    affinities = features.new_zeros((features.shape[0], len(neighbour_offsets(radius)), height, width))
    for k, (dy, dx) in enumerate(neighbour_offsets(radius)):
        source, destination = pair_slices(int(dy), int(dx), height, width)
        difference = features[(..., *source)] - features[(..., *destination)]
        affinities[(slice(None), k, *source)] = torch.exp(-difference.abs().mean(dim=1))
    return affinities


def affinity_loss(
    aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """PSA train_aff.py: bg/4 + fg/4 + neg/2, each the label-weighted mean NLL over the whole batch.

    aff: (B, P, h, w) in [0, 1]; labels of the same shape (or broadcastable), 0/1 floats.
    """
    bg_count = bg_pos.sum() + LOSS_EPS
    fg_count = fg_pos.sum() + LOSS_EPS
    neg_count = neg.sum() + LOSS_EPS
    bg_loss = torch.sum(-bg_pos * torch.log(aff + LOSS_EPS)) / bg_count
    fg_loss = torch.sum(-fg_pos * torch.log(aff + LOSS_EPS)) / fg_count
    neg_loss = torch.sum(-neg * torch.log(1.0 + LOSS_EPS - aff)) / neg_count
    return bg_loss / 4 + fg_loss / 4 + neg_loss / 2
