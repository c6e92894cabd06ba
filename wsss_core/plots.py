"""Pictures of results: class masks in colour, weak labels drawn on images, the confusion
matrix, and a grid of overlays (image | GT | weak labels | pseudo mask | prediction).

Pure functions of arrays; figures are matplotlib `Figure` objects made without pyplot (no
global state, no display: safe on worker threads and headless machines). Colours are the
PASCAL VOC palette, as in exported PNG masks (void / unlabelled 255 is its cream colour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsss_core.data.image_io import voc_palette
from wsss_core.data.sample import IGNORE_INDEX

MASK_ALPHA = 0.6  # weight of a mask's colour over the image


def colorize(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """HxW class indices -> HxWx3 uint8 palette colours (255: void colour)."""
    palette = voc_palette() if palette is None else palette
    return palette[np.asarray(mask, dtype=np.uint8)]


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = MASK_ALPHA, skip: int | None = None) -> np.ndarray:
    """The mask's colours blended over the image; pixels equal to `skip` (e.g. 255) keep the image."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask).astype(np.float32)
    if skip is not None:
        keep = np.asarray(mask) == skip
        blended[keep] = image[keep]
    return np.clip(blended, 0, 255).astype(np.uint8)


def draw_scribbles(image: np.ndarray, scribbles: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Scribble pixels (class index, 255 = unlabelled) painted in their class colour, thickened
    by `thickness` pixels so thin strokes show at thumbnail size."""
    scribbles = np.asarray(scribbles)
    grown = scribbles.copy()
    for _ in range(max(0, thickness)):  # each pass: unlabelled pixels take a labelled neighbour's class
        for axis in (0, 1):
            for shift in (1, -1):
                moved = np.roll(grown, shift, axis=axis)
                fill = (grown == IGNORE_INDEX) & (moved != IGNORE_INDEX)
                grown[fill] = moved[fill]
    out = image.copy()
    labelled = grown != IGNORE_INDEX
    out[labelled] = colorize(grown)[labelled]
    return out


def draw_boxes(image: np.ndarray, boxes: np.ndarray, thickness: int = 2) -> np.ndarray:
    """Box outlines ((n, 5): class, x0, y0, x1, y1 with x1, y1 exclusive) in their class colour."""
    out = image.copy()
    palette = voc_palette()
    height, width = image.shape[:2]
    for cls, x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 5):
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(width, x1), min(height, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        colour = palette[int(cls) % 256]
        t = thickness
        out[y0 : min(y1, y0 + t), x0:x1] = colour
        out[max(y0, y1 - t) : y1, x0:x1] = colour
        out[y0:y1, x0 : min(x1, x0 + t)] = colour
        out[y0:y1, max(x0, x1 - t) : x1] = colour
    return out


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> Any:
    """The confusion matrix (rows: GT, columns: prediction), each row in percent of its GT
    pixels; a row with no GT pixels stays empty."""
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, 100.0 * counts / totals, np.nan)
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2.0)
    figure = Figure(figsize=(size, size), layout="constrained")
    axes = figure.add_subplot()
    shown = axes.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=100)
    axes.set_xticks(range(n), labels=list(class_names), rotation=90)
    axes.set_yticks(range(n), labels=list(class_names))
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    if n <= 25:  # numbers in the cells while they stay readable
        for row in range(n):
            for col in range(n):
                if np.isfinite(share[row, col]) and share[row, col] >= 0.5:
                    colour = "white" if share[row, col] > 60 else "black"
                    axes.text(col, row, f"{share[row, col]:.0f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(shown, ax=axes, shrink=0.8, label="% of the GT class's pixels")
    if title:
        axes.set_title(title)
    return figure


@dataclass
class OverlayRow:
    """One image of an overlay grid: named panels (HxWx3 uint8 pictures, None: not available)."""

    image_id: str
    panels: dict[str, np.ndarray | None] = field(default_factory=dict)
    note: str = ""  # shown under the weak-labels panel (e.g. the image's tags)


def overlay_grid(rows: Sequence[OverlayRow], title: str = "") -> Any:
    """A figure with one row per image and one column per panel name (in first-seen order)."""
    from matplotlib.figure import Figure

    columns = list(dict.fromkeys(name for row in rows for name in row.panels))
    if not rows or not columns:
        raise ValueError("an overlay grid needs at least one image and one panel")
    figure = Figure(figsize=(2.4 * len(columns), 2.0 * len(rows) + 0.4), layout="constrained")
    grid = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        for c, name in enumerate(columns):
            axes = grid[r][c]
            axes.set_xticks([])
            axes.set_yticks([])
            picture = row.panels.get(name)
            if picture is None:
                axes.text(0.5, 0.5, "not computed", ha="center", va="center", fontsize=8, transform=axes.transAxes)
            else:
                axes.imshow(picture)
            if r == 0:
                axes.set_title(name, fontsize=9)
            if c == 0:
                axes.set_ylabel(row.image_id, fontsize=8)
            if row.note and name == "weak labels":
                axes.set_xlabel(row.note, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
