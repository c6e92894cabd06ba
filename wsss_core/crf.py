"""Dense CRF refinement (Krähenbühl & Koltun) with the parameters PSA uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsss_core.errors import BadInputError

PROBABILITY_FLOOR = 1e-5  # probabilities are clipped here before -log (pydensecrf's default)


@dataclass(frozen=True)
class CRFConfig:
    """PSA's dCRF: 10 mean-field iterations, Gaussian sxy 3 / compat 3, bilateral sxy 80 / srgb 13 / compat 10."""

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0


def unary_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """(C, H, W) scores -> (C, H*W) float32 C-contiguous unary energies -log(clip(p))."""
    clipped = np.clip(probs, PROBABILITY_FLOOR, 1.0)
    return np.ascontiguousarray(-np.log(clipped).reshape(probs.shape[0], -1), dtype=np.float32)


def crf_inference(image: np.ndarray, probs: np.ndarray, config: CRFConfig = CRFConfig()) -> np.ndarray:
    """Refine per-class scores with a dense CRF.

    image: HxWx3 uint8 RGB. probs: (C, H, W) scores in [0, 1] (need not sum to 1; PSA
    feeds unnormalised CAM scores). Returns (C, H, W) float32 probabilities summing to 1.
    """
    import pydensecrf.densecrf as dcrf

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError("image", f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise BadInputError("probs", f"expected (C, {image.shape[0]}, {image.shape[1]}), got {probs.shape}")
    if probs.shape[0] < 1:
        raise BadInputError("probs", "no classes")
    n_labels, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(unary_from_probabilities(probs))
    crf.addPairwiseGaussian(sxy=config.gaussian_sxy, compat=config.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=config.bilateral_sxy,
        srgb=config.bilateral_srgb,
        rgbim=np.ascontiguousarray(image),
        compat=config.bilateral_compat,
    )
    q = crf.inference(config.iterations)
    return np.asarray(q, dtype=np.float32).reshape(n_labels, height, width)
