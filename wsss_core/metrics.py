"""Confusion-matrix segmentation metrics: per-class IoU, mIoU, pixel accuracy."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

import numpy as np

from wsss_core.data.sample import IGNORE_INDEX


class ConfusionMatrix:
    """Counts pixels: matrix[gt, pred]. gt 255 is ignored.

    A prediction outside 0..C-1 (e.g. 255, "no label" in a pseudo mask) counts as a miss
    of the gt class (in `unpredicted`) and as a hit for no class.
    """

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.unpredicted = np.zeros(num_classes, dtype=np.int64)
        self.images = 0  # how many images were added (methods scored on different images must say so)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> ConfusionMatrix:
        """Add one image's counts; returns self."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        valid = gt != IGNORE_INDEX
        gt, pred = gt[valid], pred[valid]
        if gt.size and (gt.min() < 0 or gt.max() >= self.num_classes):
            raise ValueError(f"ground truth has classes outside 0..{self.num_classes - 1} and 255")
        predicted = (pred >= 0) & (pred < self.num_classes)
        c = self.num_classes
        self.matrix += np.bincount(gt[predicted] * c + pred[predicted], minlength=c * c).reshape(c, c)
        self.unpredicted += np.bincount(gt[~predicted], minlength=c)
        self.images += 1
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """A new matrix holding the counts of both."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {self.num_classes} classes with {other.num_classes}")
        merged = ConfusionMatrix(self.num_classes)
        merged.matrix = self.matrix + other.matrix
        merged.unpredicted = self.unpredicted + other.unpredicted
        merged.images = self.images + other.images
        return merged

    def iou(self) -> np.ndarray:
        """(C,) float64 IoU per class; nan where the class is in neither gt nor prediction."""
        hits = np.diag(self.matrix).astype(np.float64)
        gt_total = self.matrix.sum(axis=1) + self.unpredicted
        pred_total = self.matrix.sum(axis=0)
        union = (gt_total + pred_total - hits).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, hits / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present (nan if none)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Share of non-ignored pixels labelled right (nan if none counted)."""
        total = self.matrix.sum() + self.unpredicted.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    @classmethod
    def from_dict(cls, payload: Mapping[str, object]) -> ConfusionMatrix:
        """The matrix back from its ``to_dict()`` (the counts; the scores follow from them)."""
        matrix = cls(int(payload["num_classes"]))  # type: ignore[arg-type]
        matrix.matrix = np.asarray(payload["matrix"], dtype=np.int64).reshape(matrix.num_classes, matrix.num_classes)
        matrix.unpredicted = np.asarray(payload["unpredicted"], dtype=np.int64).reshape(matrix.num_classes)
        matrix.images = int(payload["images"])  # type: ignore[arg-type]
        return matrix

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary (nan becomes None)."""
        return {
            "num_classes": self.num_classes,
            "images": self.images,
            "matrix": self.matrix.tolist(),
            "unpredicted": self.unpredicted.tolist(),
            "iou": [_none_if_nan(v) for v in self.iou()],
            "miou": _none_if_nan(self.miou()),
            "pixel_accuracy": _none_if_nan(self.pixel_accuracy()),
        }


def format_iou_table(
    results: Mapping[str | tuple[str, ...], ConfusionMatrix],
    class_names: Sequence[str],
    key_header: Sequence[str] = ("method",),
    images: bool = False,
) -> str:
    """Plain-text table: one row per result, IoU per class and mIoU in percent ("-" = absent).

    A result's key fills the leading columns (a string: one column; a tuple: one each, named
    by key_header, e.g. ("mask set", "round", "split")); images: add the image count column.
    """
    header = [*key_header, *(["images"] if images else []), *class_names, "mIoU"]
    rows = [header]
    for key, confusion in results.items():
        keys = [key] if isinstance(key, str) else list(key)
        if len(keys) != len(key_header):
            raise ValueError(f"{key}: {len(keys)} key columns but {len(key_header)} names")
        if confusion.num_classes != len(class_names):
            raise ValueError(f"{key}: {confusion.num_classes} classes but {len(class_names)} names")
        values = [*confusion.iou(), confusion.miou()]
        rows.append([*keys, *([str(confusion.images)] if images else []), *(_percent(v) for v in values)])
    return align_columns(rows, right=range(len(key_header), len(header)))


def align_columns(rows: Sequence[Sequence[str]], right: Container[int]) -> str:
    """Plain-text table: cells padded to their column's width, two spaces apart; the columns
    whose index is in ``right`` right-aligned (numbers), the others left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    )


def _percent(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.1f}"


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
