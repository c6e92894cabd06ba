"""A round's labels: DeepLabV3's softmax averaged over scales and flips, optionally a dense CRF, argmax."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss_core.backbones import normalise_images
from wsss_core.psa.cam import resize_image
from wsss_core.crf import CRFConfig, crf_inference
from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError
from wsss_core.segmentation.config import SegmentationInferenceConfig
from wsss_core.segmentation.model import SegmentationNet


def predict_probabilities(
    model: SegmentationNet,
    image: np.ndarray,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """(C, H, W) float32 class probabilities of an HxWx3 uint8 image, summing to 1 per pixel.

    Each scale's (and its mirror's) softmax is resized to the image bilinearly and the
    results are averaged. bfloat16 autocast on CUDA, softmax in float32.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError("image", f"expected HxWx3 uint8, got {image.shape} {image.dtype}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {tuple(scales)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    height, width = image.shape[:2]
    total = torch.zeros((model.num_classes, height, width), device=device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for scale in scales:
            scaled = resize_image(image, scale)
            batch = np.stack([scaled, scaled[:, ::-1]]) if flip else scaled[None]
            probs = F.softmax(model(normalise_images(batch, device)).float(), dim=1)
            probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
            total += probs[0]
            if flip:
                total += probs[1].flip(-1)
    total /= len(scales) * (2 if flip else 1)
    return total.cpu().numpy().astype(np.float32)


def predict_mask(
    model: SegmentationNet,
    image: np.ndarray,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: CRFConfig | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """HxW uint8 class indices: argmax of ``predict_probabilities``, after a dense CRF when ``crf``."""
    probs = predict_probabilities(model, image, scales, flip, device)
    if crf is not None:
        probs = crf_inference(image, probs, crf)
    return np.argmax(probs, axis=0).astype(np.uint8)


def label_classes(labels: np.ndarray) -> list[int]:
    """The classes a label map holds (void, 255, is not a class)."""
    return [int(c) for c in np.unique(labels) if c != IGNORE_INDEX]


def keep_classes(probs: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """probs with every class outside ``classes`` (and background, 0) zeroed, renormalised per pixel."""
    allowed = np.zeros(len(probs), dtype=bool)
    allowed[[0, *classes]] = True
    kept = probs * allowed[:, None, None]
    return kept / np.maximum(kept.sum(axis=0, keepdims=True), 1e-12)


def weigh_by_labels(probs: np.ndarray, labels: np.ndarray, odds: float) -> np.ndarray:
    """probs (C, H, W) times a prior that gives each pixel's label class ``odds`` times the
    weight of every other class, renormalised: the network overrules a pixel's label only
    where it finds another class more than ``odds`` times as likely. Void pixels (255) and
    labels outside the classes keep the network's probabilities."""
    if labels.shape != probs.shape[1:]:
        raise ValueError(f"labels of shape {labels.shape} for probabilities of shape {probs.shape}")
    prior = np.ones_like(probs)
    rows, cols = np.nonzero(labels < len(probs))
    prior[labels[rows, cols], rows, cols] = odds
    weighed = probs * prior
    return weighed / np.maximum(weighed.sum(axis=0, keepdims=True), 1e-12)


def predict_round(
    model: SegmentationNet,
    image: np.ndarray,
    config: SegmentationInferenceConfig = SegmentationInferenceConfig(),
    device: torch.device | str | None = None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One image's label for the next round, as ``config`` says (scales, flip, CRF), and the
    (C, H, W) probabilities it was made from (before the CRF: what its confidence scores).

    labels: the image's previous labels (HxW, 255 void), where it has them: with
    config.label_classes_only the classes they leave out are left out, and with
    config.label_odds they weigh each pixel's class (weigh_by_labels), before the CRF.
    """
    probs = round_probabilities(predict_probabilities(model, image, config.scales, config.flip, device), config, labels)
    final = crf_inference(image, probs, config.crf_config) if config.crf else probs
    return np.argmax(final, axis=0).astype(np.uint8), probs


def round_probabilities(
    probs: np.ndarray, config: SegmentationInferenceConfig, labels: np.ndarray | None = None
) -> np.ndarray:
    """The network's (C, H, W) probabilities as a round takes them for an image with these
    previous labels (None: as they are): kept to its label classes, weighed by its labels."""
    if labels is None:
        return probs
    if config.label_classes_only:
        probs = keep_classes(probs, label_classes(labels))
    if config.label_odds is not None:
        probs = weigh_by_labels(probs, labels, config.label_odds)
    return probs


def predict_round_mask(
    model: SegmentationNet,
    image: np.ndarray,
    config: SegmentationInferenceConfig = SegmentationInferenceConfig(),
    device: torch.device | str | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """HxW uint8: the label of ``predict_round`` alone."""
    return predict_round(model, image, config, device, labels)[0]
