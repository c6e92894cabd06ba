"""How the GraphNet path's pseudo masks are painted: each superpixel takes its node's most
probable class, or the node probabilities are painted to pixels and refined by the dense CRF.
tasks/graphnet.py calls these per image.
"""

from __future__ import annotations

import numpy as np

from wsss_core.crf import CRFConfig, crf_inference
from wsss_core.errors import BadInputError


def node_mask(superpixels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """HxW uint8: each superpixel painted with its node's most probable class."""
    probabilities = _check_node_probabilities(superpixels, probabilities)
    return np.argmax(probabilities, axis=1).astype(np.uint8)[superpixels]


def pixel_probabilities(superpixels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """(C, H, W) float32: each pixel takes its superpixel's class probabilities."""
    probabilities = _check_node_probabilities(superpixels, probabilities)
    return np.ascontiguousarray(np.moveaxis(probabilities[superpixels], -1, 0), dtype=np.float32)


def crf_node_mask(
    image: np.ndarray, superpixels: np.ndarray, probabilities: np.ndarray, config: CRFConfig = CRFConfig()
) -> np.ndarray:
    """HxW uint8: node probabilities painted to pixels, refined by the dense CRF, argmax."""
    if image.shape[:2] != superpixels.shape:
        raise BadInputError("superpixels", f"shape {superpixels.shape} != image {image.shape[:2]}")
    refined = crf_inference(image, pixel_probabilities(superpixels, probabilities), config)
    return np.argmax(refined, axis=0).astype(np.uint8)


def _check_node_probabilities(superpixels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2:
        raise BadInputError("node probabilities", f"expected (n_nodes, C), got shape {probabilities.shape}")
    if superpixels.size and int(superpixels.max()) >= probabilities.shape[0]:
        raise BadInputError(
            "superpixels", f"label {int(superpixels.max())} but only {probabilities.shape[0]} nodes"
        )
    return probabilities
