"""What a reviewer sees and corrects for one image, independent of the tool's format."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wsss_core.data.sample import IGNORE_INDEX, Box
from wsss_core.errors import WsssError


class ReviewFileError(WsssError):
    """A review file that cannot be imported: one line per problem, all found before anything is
    written (so a file with problems changes nothing)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class ImageLabels:
    """One image's annotations, as class indices of the dataset's class list.

    scribble: HxW uint8, class index on stroke pixels, 255 elsewhere (None: the image has none).
    boxes: x1/y1 exclusive, as the readers give them. tags: sorted foreground classes.
    mask: a full mask a person drew (HxW uint8, 255 void), None where nobody drew one.
    """

    image_id: str
    height: int
    width: int
    scribble: np.ndarray | None = None
    boxes: list[Box] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)
    mask: np.ndarray | None = None


@dataclass
class ReviewItem:
    """One exported image: its labels, the image itself, its current pseudo mask and its confidence.
    An image with a manual mask (labels.mask, a person's) goes without its pseudo mask (None)."""

    labels: ImageLabels
    image: np.ndarray  # HxWx3 uint8, as ingested
    pseudo: np.ndarray | None  # HxW uint8
    confidence: float | None
    file_name: str  # the image's file, relative to the export folder (images/<id>.png)

    @property
    def image_id(self) -> str:
        return self.labels.image_id


def class_layers(label_map: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
    """(class index, HxW bool) for each class present in a class map (255 left out), by index."""
    if label_map is None:
        return []
    return [(int(c), label_map == c) for c in np.unique(label_map) if c != IGNORE_INDEX]


def paint_layers(layers: list[tuple[int, np.ndarray]], shape: tuple[int, int], fill: int = IGNORE_INDEX) -> np.ndarray:
    """A class map from (class, bool mask) layers; where layers overlap the later one wins."""
    painted = np.full(shape, fill, dtype=np.uint8)
    for class_index, layer in layers:
        painted[layer] = class_index
    return painted


def boxes_from_array(rows: np.ndarray) -> list[Box]:
    """A workspace's (n, 5) int32 boxes array (class, x0, y0, x1, y1) as Boxes."""
    return [Box(*(int(v) for v in row)) for row in np.asarray(rows).reshape(-1, 5)]


def box_key(box: Box) -> tuple[int, int, int, int, int]:
    return (box.class_index, box.x0, box.y0, box.x1, box.y1)


def same_scribble(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Two scribbles are the same when they label the same pixels alike (None = nothing labelled)."""
    if a is None and b is None:
        return True
    if a is None or b is None:
        other = b if a is None else a
        return bool((other == IGNORE_INDEX).all())
    return a.shape == b.shape and np.array_equal(a, b)
