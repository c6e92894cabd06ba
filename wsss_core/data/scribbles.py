"""ScribbleSup scribble annotations (Lin et al., CVPR 2016): one XML file per image.

The released files (``scribble_annotation/pascal_2012/<id>.xml``) look like::

    <annotation>
      <filename>2007_000032.jpg</filename>
      <size><width>500</width><height>281</height></size>
      <polygon>
        <tag>plane</tag>
        <point><X>104</X><Y>78</Y></point>
        <point><X>183</X><Y>93</Y></point>
      </polygon>
      ...
    </annotation>

Each ``<polygon>`` is one stroke: an open polyline in 0-based pixel coordinates, a few
points of which lie slightly outside the image. ``<tag>`` uses short class names
(``plane``, ``bike``, ``table``, ``plant``, ``monitor``). VOC-style files with
``<object><name>..</name><polygon>..</polygon></object>`` and lower-case ``x``/``y``
are read too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np
from skimage.draw import line

from wsss_core.data.image_io import read_xml
from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError

# ScribbleSup's short names -> PASCAL VOC's names; used only when a name is not a class itself.
SCRIBBLESUP_ALIASES: dict[str, str] = {
    "plane": "aeroplane",
    "bike": "bicycle",
    "table": "diningtable",
    "plant": "pottedplant",
    "monitor": "tvmonitor",
}

# A stroke point farther outside the image than this many image sides is a broken file.
_MAX_OUTSIDE_SIDES = 2


@dataclass(frozen=True)
class Stroke:
    """One scribble stroke: a polyline of (x, y) points with a class index."""

    class_index: int
    points: np.ndarray  # (n, 2) int64 of x, y


def scribble_class_index(name: str, classes: list[str]) -> int | None:
    """Index of a scribble tag in the class list ("background" is always 0); None if unknown."""
    name = name.strip()
    if name == "background":
        return 0
    if name in classes:
        return classes.index(name)
    alias = SCRIBBLESUP_ALIASES.get(name)
    if alias is not None and alias in classes:
        return classes.index(alias)
    return None


def _child_text(element: Element, *tags: str) -> str | None:
    for tag in tags:
        child = element.find(tag)
        if child is not None and child.text is not None and child.text.strip():
            return child.text.strip()
    return None


def _polygon_points(path: Path, polygon: Element) -> np.ndarray:
    points = []
    for point in polygon.findall("point"):
        x, y = _child_text(point, "X", "x"), _child_text(point, "Y", "y")
        if x is None or y is None:
            raise BadInputError(path, "a <point> lacks its <X> or <Y>")
        try:
            points.append((round(float(x)), round(float(y))))
        except ValueError:
            raise BadInputError(path, f"point ({x!r}, {y!r}) is not numeric") from None
    return np.asarray(points, dtype=np.int64).reshape(-1, 2)


def _labelled_polygons(root: Element) -> list[tuple[str | None, Element]]:
    """(class name, polygon) pairs in document order, from either layout."""
    pairs: list[tuple[str | None, Element]] = []
    for element in root:
        if element.tag == "polygon":
            pairs.append((_child_text(element, "tag", "name"), element))
        elif element.tag == "object":
            name = _child_text(element, "name", "tag")
            for polygon in element.findall("polygon"):
                pairs.append((_child_text(polygon, "tag", "name") or name, polygon))
    return pairs


def _check_declared_size(path: Path, root: Element, shape: tuple[int, int]) -> None:
    size = root.find("size")
    if size is None:
        return
    width, height = _child_text(size, "width"), _child_text(size, "height")
    if width is None or height is None or not (width.isdigit() and height.isdigit()):
        return
    if int(width) and int(height) and (int(height), int(width)) != tuple(shape):
        raise BadInputError(path, f"scribble XML is for a {width}x{height} image but image is {shape[1]}x{shape[0]}")


def read_scribble_xml(path: str | Path, shape: tuple[int, int], classes: list[str]) -> list[Stroke]:
    """The strokes of a ScribbleSup XML file, in document order."""
    path = Path(path)
    root = read_xml(path)
    _check_declared_size(path, root, shape)
    height, width = shape
    limit = _MAX_OUTSIDE_SIDES * max(height, width)
    strokes = []
    for name, polygon in _labelled_polygons(root):
        if name is None:
            raise BadInputError(path, "a <polygon> has no class <tag>")
        class_index = scribble_class_index(name, classes)
        if class_index is None:
            raise BadInputError(path, f"unknown class name {name!r} (classes: {', '.join(classes)})")
        points = _polygon_points(path, polygon)
        far = points.size and (
            points.min() < -limit or points[:, 0].max() > width + limit or points[:, 1].max() > height + limit
        )
        if far:
            raise BadInputError(path, f"stroke point far outside the {width}x{height} image")
        if len(points):
            strokes.append(Stroke(class_index, points))
    return strokes


def polyline_pixels(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a polyline through (x, y) points (one point: that pixel)."""
    if len(points) == 1:
        return points[:1, 1].copy(), points[:1, 0].copy()
    segments = [line(int(y0), int(x0), int(y1), int(x1)) for (x0, y0), (x1, y1) in zip(points[:-1], points[1:])]
    return np.concatenate([r for r, _ in segments]), np.concatenate([c for _, c in segments])


def _thicken(rows: np.ndarray, cols: np.ndarray, stroke_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a square brush of side stroke_width swept along the given pixels."""
    offsets = np.arange(-(stroke_width // 2), stroke_width - stroke_width // 2)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return (rows[:, None] + dy.ravel()).ravel(), (cols[:, None] + dx.ravel()).ravel()


def _paint(label_map: np.ndarray, rows: np.ndarray, cols: np.ndarray, value: int) -> None:
    inside = (rows >= 0) & (rows < label_map.shape[0]) & (cols >= 0) & (cols < label_map.shape[1])
    label_map[rows[inside], cols[inside]] = value


def rasterise_strokes(strokes: list[Stroke], shape: tuple[int, int], stroke_width: int) -> np.ndarray:
    """HxW uint8 scribble map: stroke pixels = class index, the rest 255.

    Each polyline is drawn one pixel wide, then widened to stroke_width. The drawn
    centrelines always keep their class; where two strokes' widenings meet, the later
    stroke wins (as where centrelines cross).
    """
    if stroke_width < 1:
        raise ValueError(f"stroke_width must be >= 1, got {stroke_width}")
    centre = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    widened = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    for stroke in strokes:
        rows, cols = polyline_pixels(stroke.points)
        _paint(centre, rows, cols, stroke.class_index)
        _paint(widened, *_thicken(rows, cols, stroke_width), stroke.class_index)
    return np.where(centre != IGNORE_INDEX, centre, widened)


def rasterise_scribble_xml(
    path: str | Path, shape: tuple[int, int], classes: list[str], stroke_width: int
) -> np.ndarray:
    """A ScribbleSup XML file as an HxW uint8 scribble map (class index, 255 = unlabelled)."""
    return rasterise_strokes(read_scribble_xml(path, shape, classes), tuple(shape[:2]), stroke_width)
