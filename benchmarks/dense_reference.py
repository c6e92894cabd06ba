"""PSA's dense random walk (jiwoon-ahn/psa infer_aff.py), kept as the test oracle and benchmark baseline.

Dense N x N W^beta with self-loops 1, columns normalised, squared log_t times, then
cams (C, N) @ T. Pairs: every (position, half-plane offset) whose destination is inside
the grid (PSA's own code keeps only sources whose every destination is inside).
Indices are found by brute force here, independently of wsss_core's slicing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsss_core.psa.affinity import neighbour_offsets


def dense_affinity_matrix(aff: np.ndarray, beta: float, radius: int = 5, dtype: type = np.float64) -> np.ndarray:
    """(P, h, w) half-plane affinities -> dense symmetric (N, N) W^beta with ones on the diagonal."""
    _, height, width = aff.shape
    n_nodes = height * width
    weights = np.zeros((n_nodes, n_nodes), dtype=dtype)
    weights[np.arange(n_nodes), np.arange(n_nodes)] = 1.0
    ys, xs = (grid.ravel() for grid in np.mgrid[0:height, 0:width])
    for k, (dy, dx) in enumerate(neighbour_offsets(radius)):
        to_y, to_x = ys + dy, xs + dx
        inside = (to_y >= 0) & (to_y < height) & (to_x >= 0) & (to_x < width)
        source = ys[inside] * width + xs[inside]
        destination = to_y[inside] * width + to_x[inside]
        value = aff[k].ravel()[inside].astype(dtype) ** beta
        weights[source, destination] = value
        weights[destination, source] = value
    return weights


def dense_random_walk(
    cams_with_bg: np.ndarray, weights: np.ndarray, log_t: int, flush_below: float = 0.0
) -> np.ndarray:
    """PSA: trans = W / W.sum(0); trans = trans @ trans (log_t times); cams (C, N) @ trans -> (C, h, w).

    flush_below > 0 zeroes smaller entries after each squaring: in float32 the squarings
    otherwise fill with denormal numbers, which make CPU matrix products many times slower.
    """
    channels = cams_with_bg.shape[0]
    transition = weights / weights.sum(axis=0, keepdims=True)
    for _ in range(log_t):
        transition = transition @ transition
        if flush_below > 0:
            flush_small_entries(transition, flush_below)
    walked = cams_with_bg.reshape(channels, -1).astype(weights.dtype) @ transition
    return walked.reshape(cams_with_bg.shape)


def flush_small_entries(matrix: np.ndarray, threshold: float, rows_per_chunk: int = 512) -> None:
    """In place: entries with |x| < threshold become 0 (in row chunks, to add little memory)."""
    for start in range(0, matrix.shape[0], rows_per_chunk):
        chunk = matrix[start : start + rows_per_chunk]
        chunk[np.abs(chunk) < threshold] = 0


def psa_dense_propagate_scores(
    cams: np.ndarray, aff: np.ndarray, beta: float, log_t: int, power: float, stride: int, radius: int = 5
) -> np.ndarray:
    """PSA infer_aff.py end to end from full-resolution CAMs (K, H, W) -> (K+1, H, W) scores."""
    _, height, width = cams.shape
    padded_h, padded_w = -(-height // stride) * stride, -(-width // stride) * stride
    cam_full = np.zeros((cams.shape[0] + 1, height, width), np.float32)
    cam_full[1:] = cams
    cam_full[0] = (1 - np.max(cam_full[1:], 0)) ** power
    cam_full = np.pad(cam_full, ((0, 0), (0, padded_h - height), (0, padded_w - width)), mode="constant")
    small = F.avg_pool2d(torch.from_numpy(cam_full), stride, stride).numpy()
    walked = dense_random_walk(small, dense_affinity_matrix(aff, beta, radius), log_t)
    upsampled = torch.nn.Upsample((padded_h, padded_w), mode="bilinear", align_corners=False)(
        torch.from_numpy(walked.astype(np.float32))[None]
    )[0]
    return upsampled[:, :height, :width].numpy()
