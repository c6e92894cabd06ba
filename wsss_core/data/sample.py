"""What a dataset reader hands to the pipeline for one image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255  # "void" in masks, "unlabelled" in scribbles


@dataclass(frozen=True)
class Box:
    """An object box in pixel coordinates; x1/y1 exclusive."""

    class_index: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


@dataclass
class Sample:
    """One image and whatever labels the dataset has for it.

    image: HxWx3 uint8 RGB. gt / scribble / manual: HxW uint8, value = class index,
    255 = void / unlabelled; manual: a full mask a person drew, the image's best label
    (used in place of its pseudo masks, never as GT). tags: sorted foreground class indices present.
    warnings: human-readable notes on conversions made while reading.
    """

    image_id: str
    image: np.ndarray
    gt: np.ndarray | None = None
    scribble: np.ndarray | None = None
    boxes: list[Box] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    manual: np.ndarray | None = None

    def boxes_array(self) -> np.ndarray:
        """Boxes as an (n, 5) int32 array of class, x0, y0, x1, y1."""
        rows = [(b.class_index, b.x0, b.y0, b.x1, b.y1) for b in self.boxes]
        return np.asarray(rows, dtype=np.int32).reshape(-1, 5)
