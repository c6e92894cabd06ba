"""Per-superpixel node features for the GraphNet path.

GraphNet takes VGG-16 relu5 features of the uncropped image, resizes them bilinearly to
the image size and averages them per superpixel. Bilinear resizing is linear, so the
average over a superpixel is a fixed weighted sum of feature-map cells: we build those
weights as a sparse (h*w, n_nodes) matrix and never materialise the D x H x W array.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.color import rgb2lab, rgb2gray
from skimage.feature import local_binary_pattern

from wsss_core.backbones import Backbone, normalise_images
from wsss_core.graphnet.network_configs import FeatureConfig

MAX_POOL_CHANNEL_CHUNK = 64  # channels resized at once for max pooling


def extract_feature_maps(
    backbone: Backbone,
    images: list[np.ndarray],
    device: torch.device | str,
    batch_size: int = 8,
) -> list[np.ndarray]:
    """Last-stage feature maps of uncropped images: float16 (D, ceil(H/8), ceil(W/8)) each.

    Images of the same size are batched together; output order follows ``images``.
    """
    backbone = backbone.to(device).eval()
    by_size: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {index}: expected HxWx3 uint8, got {image.shape} {image.dtype}")
        by_size.setdefault(image.shape, []).append(index)
    maps: list[np.ndarray | None] = [None] * len(images)
    with torch.inference_mode():
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = normalise_images(np.stack([images[i] for i in chunk]), device)
                last_stage = backbone(batch)[-1].to(torch.float16).cpu().numpy()
                for position, index in enumerate(chunk):
                    maps[index] = last_stage[position]
    return [m for m in maps if m is not None]


def bilinear_weights_1d(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and weights of torch's bilinear resize.

    Same convention as ``F.interpolate(mode="bilinear", align_corners=False)``.
    """
    scale = in_size / out_size
    source = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weight_high = source - low
    return low, high, 1.0 - weight_high, weight_high


def superpixel_pooling_matrix(
    feature_shape: tuple[int, int], superpixels: np.ndarray, n_nodes: int
) -> scipy.sparse.csr_matrix:
    """Sparse R (n_nodes, h*w): node mean of the bilinearly resized map == R @ map.reshape(h*w, D)."""
    h, w = feature_shape
    height, width = superpixels.shape
    y_low, y_high, y_wlow, y_whigh = bilinear_weights_1d(height, h)
    x_low, x_high, x_wlow, x_whigh = bilinear_weights_1d(width, w)
    nodes = superpixels.astype(np.int64)
    counts = np.bincount(nodes.ravel(), minlength=n_nodes).astype(np.float64)
    inverse_count = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    rows, cols, values = [], [], []
    for ys, wy in ((y_low, y_wlow), (y_high, y_whigh)):
        for xs, wx in ((x_low, x_wlow), (x_high, x_whigh)):
            cells = ys[:, None] * w + xs[None, :]
            rows.append(nodes.ravel())
            cols.append(cells.ravel())
            values.append((wy[:, None] * wx[None, :]).ravel() * inverse_count[nodes.ravel()])
    matrix = scipy.sparse.coo_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n_nodes, h * w)
    )
    return matrix.tocsr()  # duplicates are summed here


def pool_per_superpixel(
    feature_map: np.ndarray, superpixels: np.ndarray, n_nodes: int, mode: Literal["mean", "max"] = "mean"
) -> np.ndarray:
    """(D,h,w) features resized bilinearly to the HxW superpixel map, pooled per node: (n_nodes, D) float32.

    Nodes without pixels get zeros.
    """
    _check_superpixels(superpixels, n_nodes)
    if feature_map.ndim != 3:
        raise ValueError(f"expected a (D,h,w) feature map, got shape {feature_map.shape}")
    depth, h, w = feature_map.shape
    if mode == "mean":
        matrix = superpixel_pooling_matrix((h, w), superpixels, n_nodes)
        flat = feature_map.reshape(depth, h * w).astype(np.float32).T
        return np.asarray(matrix @ flat, dtype=np.float32)
    if mode == "max":
        return _max_pool_per_superpixel(feature_map, superpixels, n_nodes)
    raise ValueError(f"unknown pooling {mode!r} (mean or max)")


def _max_pool_per_superpixel(feature_map: np.ndarray, superpixels: np.ndarray, n_nodes: int) -> np.ndarray:
    """Max is not linear: resize a chunk of channels at a time, then reduce per node."""
    depth = feature_map.shape[0]
    labels = superpixels.ravel()
    order = np.argsort(labels, kind="stable")
    present, starts = np.unique(labels[order], return_index=True)
    pooled = np.zeros((n_nodes, depth), dtype=np.float32)
    for start in range(0, depth, MAX_POOL_CHANNEL_CHUNK):
        chunk = torch.from_numpy(feature_map[start : start + MAX_POOL_CHANNEL_CHUNK].astype(np.float32))
        resized = F.interpolate(chunk[None], size=superpixels.shape, mode="bilinear", align_corners=False)[0]
        values = resized.reshape(chunk.shape[0], -1).numpy()[:, order]
        pooled[present, start : start + chunk.shape[0]] = np.maximum.reduceat(values, starts, axis=1).T
    return pooled


def colour_position_features(image: np.ndarray, superpixels: np.ndarray, n_nodes: int) -> np.ndarray:
    """(n_nodes, 8) float32: mean Lab, std Lab (L/100, a/128, b/128), centroid y/H, x/W."""
    _check_superpixels(superpixels, n_nodes)
    if image.shape[:2] != superpixels.shape:
        raise ValueError(f"image {image.shape[:2]} and superpixels {superpixels.shape} differ in size")
    height, width = superpixels.shape
    lab = rgb2lab(image).reshape(-1, 3) / np.array([100.0, 128.0, 128.0])
    labels = superpixels.ravel()
    counts = np.bincount(labels, minlength=n_nodes).astype(np.float64)
    safe = np.maximum(counts, 1.0)
    mean = np.stack([np.bincount(labels, lab[:, c], n_nodes) for c in range(3)], axis=1) / safe[:, None]
    square = np.stack([np.bincount(labels, lab[:, c] ** 2, n_nodes) for c in range(3)], axis=1)
    square /= safe[:, None]
    std = np.sqrt(np.maximum(square - mean**2, 0.0))
    ys, xs = np.divmod(np.arange(height * width), width)
    centroid_y = np.bincount(labels, (ys + 0.5) / height, n_nodes) / safe
    centroid_x = np.bincount(labels, (xs + 0.5) / width, n_nodes) / safe
    return np.concatenate([mean, std, centroid_y[:, None], centroid_x[:, None]], axis=1).astype(np.float32)


TEXTURE_SIGMAS = (1.0, 2.0, 4.0)
LBP_POINTS, LBP_RADIUS = 8, 1
N_TEXTURE_FEATURES = 2 * 2 * len(TEXTURE_SIGMAS) + LBP_POINTS + 2


def texture_features(image: np.ndarray, superpixels: np.ndarray, n_nodes: int) -> np.ndarray:
    """(n_nodes, 22) float32 hand-made texture statistics per superpixel (no network needed).

    Per superpixel: mean and std of the gradient magnitude and of |Laplacian of Gaussian|
    of the grey image at sigmas 1, 2, 4 px (12 values), and the histogram of uniform
    local binary patterns (8 neighbours, radius 1: 10 bins). These separate the classes
    that colour alone confuses when no pretrained CNN is available.
    """
    _check_superpixels(superpixels, n_nodes)
    if image.shape[:2] != superpixels.shape:
        raise ValueError(f"image {image.shape[:2]} and superpixels {superpixels.shape} differ in size")
    grey = rgb2gray(image).astype(np.float64)
    labels = superpixels.ravel()
    safe = np.maximum(np.bincount(labels, minlength=n_nodes), 1).astype(np.float64)
    columns = []
    for sigma in TEXTURE_SIGMAS:
        for response in (
            ndimage.gaussian_gradient_magnitude(grey, sigma),
            np.abs(ndimage.gaussian_laplace(grey, sigma)) * sigma,
        ):
            values = response.ravel()
            mean = np.bincount(labels, values, n_nodes) / safe
            square = np.bincount(labels, values**2, n_nodes) / safe
            columns += [mean, np.sqrt(np.maximum(square - mean**2, 0.0))]
    codes = local_binary_pattern((grey * 255).astype(np.uint8), LBP_POINTS, LBP_RADIUS, method="uniform")
    n_bins = LBP_POINTS + 2
    histogram = np.bincount(labels * n_bins + codes.ravel().astype(np.int64), minlength=n_nodes * n_bins)
    columns += list((histogram.reshape(n_nodes, n_bins) / safe[:, None]).T)
    return np.stack(columns, axis=1).astype(np.float32)


def node_features(
    feature_map: np.ndarray | None,
    image: np.ndarray,
    superpixels: np.ndarray,
    n_nodes: int,
    config: FeatureConfig = FeatureConfig(),
) -> np.ndarray:
    """Pooled CNN features, then (per config) colour and position columns: (n_nodes, D') float32."""
    parts = []
    if feature_map is not None:
        parts.append(pool_per_superpixel(feature_map, superpixels, n_nodes, config.pooling))
    if config.add_colour or config.add_position:
        extra = colour_position_features(image, superpixels, n_nodes)
        if config.add_colour:
            parts.append(extra[:, :6])
        if config.add_position:
            parts.append(extra[:, 6:])
    if config.add_texture:
        parts.append(texture_features(image, superpixels, n_nodes))
    if not parts:
        raise ValueError("no features: give a feature map or enable colour / position / texture")
    return np.concatenate(parts, axis=1)


def _check_superpixels(superpixels: np.ndarray, n_nodes: int) -> None:
    if superpixels.ndim != 2 or not np.issubdtype(superpixels.dtype, np.integer):
        shape, dtype = superpixels.shape, superpixels.dtype
        raise ValueError(f"expected an HxW integer map of superpixels, got {shape} {dtype}")
    if superpixels.size and (superpixels.min() < 0 or superpixels.max() >= n_nodes):
        raise ValueError(
            f"superpixel labels must lie in [0, {n_nodes}), got [{superpixels.min()}, {superpixels.max()}]"
        )
