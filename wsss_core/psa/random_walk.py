"""PSA's random walk on AffinityNet affinities, done sparse.

PSA (infer_aff.py) builds the dense N x N matrix W^beta (self-loops 1), normalises its
columns and squares it log_t times, then computes cams (C, N) @ T_col^t. With W
symmetric that equals T^t @ cams for the row-stochastic T = D^-1 W^beta of the paper,
which is what we apply here, one sparse product per step: ~69 nonzeros per row, so
memory stays O(N) and time O(t * N * C) instead of O(log_t * N^3).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from wsss_core.psa.affinity import check_cams, downsample_scores, neighbour_offsets, pair_slices
from wsss_core.errors import BadInputError


@dataclass(frozen=True)
class RandomWalkConfig:
    """PSA infer_aff.py defaults: beta 8, t = 2^8 steps, background power 16, radius 5, stride 8."""

    beta: float = 8.0
    log_t: int = 8
    radius: int = 5
    background_power: float = 16.0
    stride: int = 8

    @property
    def steps(self) -> int:
        return 2**self.log_t


def check_affinities(aff: np.ndarray, radius: int) -> None:
    """Raise BadInputError unless aff is (P, h, w), finite and >= 0, with P offsets of the radius."""
    n_offsets = len(neighbour_offsets(radius))
    if aff.ndim != 3 or aff.shape[0] != n_offsets:
        raise BadInputError("aff", f"expected ({n_offsets}, h, w) for radius {radius}, got shape {aff.shape}")
    if not np.all(np.isfinite(aff)) or aff.min(initial=0.0) < 0:
        raise BadInputError("aff", "affinities must be finite and >= 0")


def affinity_matrix(aff: np.ndarray, beta: float = 8.0, radius: int = 5) -> sp.csr_matrix:
    """Symmetric W^beta (N x N, N = h*w, row-major positions) with self-loops 1, float32 CSR.

    aff: (P, h, w) affinities of the half-plane offsets; the other half follows by symmetry.
    """
    check_affinities(aff, radius)
    _, height, width = aff.shape
    n_nodes = height * width
    position = np.arange(n_nodes, dtype=np.int32).reshape(height, width)
    sources, destinations, weights = [], [], []
    for k, (dy, dx) in enumerate(neighbour_offsets(radius)):
        source, destination = pair_slices(int(dy), int(dx), height, width)
        sources.append(position[source].ravel())
        destinations.append(position[destination].ravel())
        weights.append(aff[k][source].ravel())
    source_ids, destination_ids = np.concatenate(sources), np.concatenate(destinations)
    weight = np.power(np.concatenate(weights).astype(np.float32), np.float32(beta))
    diagonal = np.arange(n_nodes, dtype=np.int32)
    rows = np.concatenate([source_ids, destination_ids, diagonal])
    cols = np.concatenate([destination_ids, source_ids, diagonal])
    values = np.concatenate([weight, weight, np.ones(n_nodes, dtype=np.float32)])
    return sp.csr_matrix((values, (rows, cols)), shape=(n_nodes, n_nodes), dtype=np.float32)


def transition_matrix(aff: np.ndarray, beta: float = 8.0, radius: int = 5) -> sp.csr_matrix:
    """Row-stochastic T = D^-1 W^beta as float32 CSR (rows sum to 1; self-loops keep D >= 1)."""
    weights = affinity_matrix(aff, beta, radius)
    degree = np.asarray(weights.sum(axis=1), dtype=np.float32).ravel()
    weights.data /= np.repeat(degree, np.diff(weights.indptr))
    return weights


def random_walk(cams_with_bg: np.ndarray, transition: sp.csr_matrix, steps: int = 256) -> np.ndarray:
    """T^steps applied to every channel: (C, h, w) -> (C, h, w) float32, one sparse product per step."""
    channels, height, width = cams_with_bg.shape
    if transition.shape != (height * width, height * width):
        raise BadInputError("transition", f"is {transition.shape}, CAMs have {height}x{width} positions")
    scores = np.ascontiguousarray(cams_with_bg.reshape(channels, -1).T, dtype=np.float32)
    for _ in range(steps):
        scores = transition @ scores
    return np.ascontiguousarray(scores.T).reshape(channels, height, width)


def random_walk_torch(
    cams_with_bg: np.ndarray, transition: sp.csr_matrix, steps: int = 256, device: str = "cuda"
) -> np.ndarray:
    """The same walk with torch sparse CSR products on `device` (a GPU when there is one)."""
    channels, height, width = cams_with_bg.shape
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(
            torch.from_numpy(transition.indptr.astype(np.int64)),
            torch.from_numpy(transition.indices.astype(np.int64)),
            torch.from_numpy(transition.data.astype(np.float32)),
            size=transition.shape,
            device=device,
            check_invariants=False,  # scipy's CSR is already valid
        )
    scores = torch.from_numpy(np.ascontiguousarray(cams_with_bg.reshape(channels, -1).T, dtype=np.float32))
    scores = scores.to(device)
    for _ in range(steps):
        scores = matrix @ scores
    return scores.T.contiguous().cpu().numpy().reshape(channels, height, width)


def cams_with_background(cams: np.ndarray, power: float = 16.0) -> np.ndarray:
    """Stack (1 - max_k cams)^power as channel 0: (K, H, W) -> (K+1, H, W) float32."""
    if cams.ndim != 3:
        raise BadInputError("cams", f"expected (K, H, W), got shape {cams.shape}")
    if cams.shape[0] == 0:
        background = np.ones(cams.shape[1:], dtype=np.float32)
    else:
        background = np.power(1.0 - cams.max(axis=0), power).astype(np.float32)
    return np.concatenate([background[None], cams.astype(np.float32)], axis=0)


def grid_shape(image_shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """Affinity grid of an image padded to a multiple of the stride (PSA pads bottom/right)."""
    return -(-image_shape[0] // stride), -(-image_shape[1] // stride)


def cams_on_grid(
    cams: np.ndarray, grid: tuple[int, int], image_shape: tuple[int, int], config: RandomWalkConfig
) -> np.ndarray:
    """(K+1, h, w) walk input. Full-resolution CAMs: background at full size, then zero-pad and
    average-pool by the stride (PSA). CAMs already on the grid: background computed there."""
    if cams.shape[1:] == tuple(image_shape):
        if grid_shape(image_shape, config.stride) != grid:
            raise BadInputError(
                "aff", f"grid {grid} does not match a {image_shape} image at stride {config.stride}"
            )
        return downsample_scores(cams_with_background(cams, config.background_power), config.stride)
    if cams.shape[1:] == grid and grid_shape(image_shape, config.stride) == grid:
        return cams_with_background(cams, config.background_power)
    raise BadInputError(
        "cams", f"shape {cams.shape} fits neither the image {image_shape} nor the affinity grid {grid}"
    )


def walk_on_grid(
    cams: np.ndarray,
    aff: np.ndarray,
    config: RandomWalkConfig = RandomWalkConfig(),
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """PSA's walk on the stride grid: (K, H, W) or (K, h, w) CAMs -> (K+1, h, w) float32 walked scores.

    aff: (P, h, w) affinities on the stride grid of the image. image_shape defaults to
    the CAMs' size (full-resolution CAMs); give it when the CAMs are on the grid.
    Channel 0 is background. The rw stage stores this; upsample_walked makes pixels of it.
    """
    check_affinities(aff, config.radius)
    check_cams(cams)
    image_shape = tuple(cams.shape[1:]) if image_shape is None else tuple(image_shape)
    small = cams_on_grid(cams, tuple(aff.shape[1:]), image_shape, config)
    return random_walk(small, transition_matrix(aff, config.beta, config.radius), config.steps)


def upsample_walked(walked: np.ndarray, stride: int, image_shape: tuple[int, int]) -> np.ndarray:
    """Grid scores (C, h, w) -> (C, H, W): bilinear to the padded size, then cropped (PSA)."""
    grid = walked.shape[1:]
    upsampled = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(walked, dtype=np.float32))[None],
        size=(grid[0] * stride, grid[1] * stride),
        mode="bilinear",
        align_corners=False,
    )[0]
    return upsampled[:, : image_shape[0], : image_shape[1]].numpy()


def propagate_scores(
    cams: np.ndarray,
    aff: np.ndarray,
    config: RandomWalkConfig = RandomWalkConfig(),
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """PSA inference up to the argmax: walk_on_grid, then upsample_walked -> (K+1, H, W) float32."""
    image_shape = tuple(cams.shape[1:]) if image_shape is None else tuple(image_shape)
    return upsample_walked(walk_on_grid(cams, aff, config, image_shape), config.stride, image_shape)


def propagate(
    cams: np.ndarray,
    aff: np.ndarray,
    tags: np.ndarray,
    config: RandomWalkConfig = RandomWalkConfig(),
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """The whole PSA inference -> (H, W) uint8 labels: 0 background, tags[k] for CAM k."""
    tags = np.asarray(tags, dtype=np.int64)
    if tags.shape != (cams.shape[0],):
        raise BadInputError("tags", f"expected {cams.shape[0]} tags (one per CAM), got shape {tags.shape}")
    scores = propagate_scores(cams, aff, config, image_shape)
    class_of_channel = np.concatenate([[0], tags]).astype(np.uint8)
    return class_of_channel[np.argmax(scores, axis=0)]
