"""Reader for COCO instance annotations (``instances_*.json`` + an image folder).

Image ids are the stems of the images' ``file_name`` (``000000397133.jpg`` ->
``000000397133``), like VOC ids, so exported masks are named after their images;
two images with one stem make the dataset unusable. Classes are ``background``
followed by the category names in category-id order. Boxes and tags include crowd
annotations; in the class mask crowd regions are void (255) except where a
non-crowd instance covers them.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from wsss_core.data.classes import check_class_list
from wsss_core.data.image_io import ReadOptions, load_rgb, read_bytes, refuse_outside_link
from wsss_core.data.sample import IGNORE_INDEX, Box, Sample
from wsss_core.errors import BadInputError, DatasetError


class CocoIndex:
    """The parts of an instances JSON the reader needs, indexed by image stem."""

    def __init__(self, path: Path, dataset: dict[str, Any]):
        missing = [key for key in ("images", "annotations", "categories") if not isinstance(dataset.get(key), list)]
        if missing:
            raise DatasetError(f"{path}: not a COCO instances file (no list {', '.join(missing)})")
        try:
            categories = sorted(dataset["categories"], key=lambda c: c["id"])
            self.classes = check_class_list(["background"] + [str(c["name"]) for c in categories], path)
            self.class_of_category = {c["id"]: index for index, c in enumerate(categories, start=1)}
            self.images = self._by_stem(path, dataset["images"])
            self.annotations: dict[Any, list[dict[str, Any]]] = {}
            for annotation in dataset["annotations"]:
                self.annotations.setdefault(annotation["image_id"], []).append(annotation)
        except (KeyError, TypeError) as error:
            raise DatasetError(f"{path}: malformed COCO instances file ({type(error).__name__}: {error})") from None

    @staticmethod
    def _by_stem(path: Path, images: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        by_stem: dict[str, dict[str, Any]] = {}
        duplicates = set()
        for image in images:
            if "id" not in image or "file_name" not in image:
                raise DatasetError(f"{path}: an image entry lacks its id or file_name: {image}")
            stem = Path(str(image["file_name"])).stem
            if stem in by_stem:
                duplicates.add(stem)
            by_stem[stem] = image
        if duplicates:
            shown = ", ".join(sorted(duplicates)[:10])
            raise DatasetError(f"{path}: several images share the file stem(s) {shown}; ids must be unique")
        return by_stem


@lru_cache(maxsize=2)
def _cached_index(path: str, mtime_ns: int, size: int) -> CocoIndex:
    try:
        dataset = json.loads(read_bytes(path))
    except BadInputError as error:
        raise DatasetError(str(error)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(dataset, dict):
        raise DatasetError(f"{path}: not a COCO instances file (top level is not an object)")
    return CocoIndex(Path(path), dataset)


def load_coco_index(path: Path) -> CocoIndex:
    """The parsed annotation file, once per process (keyed by path, mtime and size)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    return _cached_index(str(path), stat.st_mtime_ns, stat.st_size)


def coco_box(bbox: list[float], class_index: int, shape: tuple[int, int]) -> Box | None:
    """A COCO [x, y, w, h] box as the pixels it touches (x1/y1 exclusive), clipped; None if empty."""
    x, y, w, h = (float(v) for v in bbox)
    height, width = shape
    x0, y0 = max(math.floor(x), 0), max(math.floor(y), 0)
    x1, y1 = min(math.ceil(x + w), width), min(math.ceil(y + h), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(class_index, x0, y0, x1, y1)


def decode_segmentation(
    path: Path, segmentation: Any, shape: tuple[int, int]
) -> tuple[np.ndarray | None, str | None]:
    """An annotation's polygons or RLE as an HxW bool mask (None and the reason when unusable)."""
    height, width = shape
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if any(isinstance(p, list) and len(p) % 2 for p in segmentation):
            raise BadInputError(path, "a segmentation polygon has an odd number of coordinates")
        if not polygons:
            return None, "no polygon with 3 or more points"
        rle = coco_mask.merge(coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise BadInputError(path, f"RLE size {segmentation['size']} but image is {height}x{width} (h x w)")
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
    else:
        return None, "no polygons or RLE"
    return coco_mask.decode(rle).astype(bool), None


def instance_class_mask(
    instances: list[tuple[int, np.ndarray]], crowd: list[np.ndarray], shape: tuple[int, int]
) -> np.ndarray:
    """Class mask: background 0, crowd void, instances painted largest first (the smaller wins)."""
    mask = np.zeros(shape, dtype=np.uint8)
    for region in crowd:
        mask[region] = IGNORE_INDEX
    for class_index, region in sorted(instances, key=lambda item: -int(item[1].sum())):
        mask[region] = class_index
    return mask


class CocoReader:
    """A COCO instances annotation file and the folder holding its images."""

    format = "coco"

    def __init__(
        self,
        annotation_json: str | Path,
        image_dir: str | Path | None = None,
        options: ReadOptions = ReadOptions(),
    ):
        self.root = Path(annotation_json).resolve()
        self.options = options
        self.split = self.root.stem
        self.name = f"coco:{self.root.stem}"
        self.image_dir = Path(image_dir).resolve() if image_dir else guess_image_dir(self.root)
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.image_dir}: image folder not found")
        self.classes = self._index.classes

    @property
    def _index(self) -> CocoIndex:
        # Not kept on the object: a pickled reader (sent to workers) stays small.
        return load_coco_index(self.root)

    def image_ids(self) -> list[str]:
        """Stems of the images' file names, in the file's order."""
        ids = list(self._index.images)
        if not ids:
            raise DatasetError(f"{self.root}: has no images")
        return ids

    def _image_path(self, image_id: str, entry: dict[str, Any]) -> Path:
        path = Path(os.path.abspath(self.image_dir / str(entry["file_name"])))
        if not path.is_relative_to(self.image_dir):
            raise BadInputError(
                self.root, f"file_name {entry['file_name']!r} of image {image_id} escapes {self.image_dir}"
            )
        refuse_outside_link(path, self.image_dir)
        return path

    def sources(self, image_id: str) -> dict[str, Path | bytes | None]:
        """What feeds one image (wsss_core.data.fingerprints): its file, and its entry in the
        instances file with its annotations (as canonical JSON: another image's edit is no change)."""
        index = self._index
        entry = index.images.get(image_id)
        if entry is None:
            return {"image": None, "annotations": None}
        listed = {"image": entry, "annotations": index.annotations.get(entry["id"], [])}
        return {
            "image": self._image_path(image_id, entry),
            "annotations": json.dumps(listed, sort_keys=True, default=str).encode(),
        }

    def load(self, image_id: str) -> Sample:
        """One image with its class mask, boxes and tags."""
        index = self._index
        entry = index.images.get(image_id)
        if entry is None:
            raise BadInputError(image_id, f"no image with file stem {image_id!r} in {self.root.name}")
        path = self._image_path(image_id, entry)
        image, warnings = load_rgb(path, self.options)
        shape = image.shape[:2]
        declared = (entry.get("height"), entry.get("width"))
        if all(declared) and tuple(declared) != shape:
            raise BadInputError(
                path, f"image is {shape[1]}x{shape[0]} but {self.root.name} says {declared[1]}x{declared[0]}"
            )
        boxes, tags = [], set()
        instances, crowd, unmasked = [], [], []
        for annotation in index.annotations.get(entry["id"], []):
            category = annotation.get("category_id")
            class_index = index.class_of_category.get(category)
            if class_index is None:
                raise BadInputError(
                    self.root, f"annotation {annotation.get('id')} of {image_id} has unknown category_id {category!r}"
                )
            tags.add(class_index)
            box = coco_box(annotation["bbox"], class_index, shape) if "bbox" in annotation else None
            if box is not None:
                boxes.append(box)
            region, problem = decode_segmentation(self.root, annotation.get("segmentation"), shape)
            if region is None:
                unmasked.append(f"annotation {annotation.get('id')}: {problem}")
            elif annotation.get("iscrowd"):
                crowd.append(region)
            else:
                instances.append((class_index, region))
        gt = instance_class_mask(instances, crowd, shape)
        if unmasked:
            gt = None
            shown = "; ".join(unmasked[:5]) + ("; ..." if len(unmasked) > 5 else "")
            warnings.append(f"{path.name}: no GT mask, {len(unmasked)} annotation(s) lack a usable mask ({shown})")
        return Sample(image_id, image, gt=gt, boxes=boxes, tags=sorted(tags), warnings=warnings)

    def describe(self) -> dict:
        """What the workspace records about the dataset."""
        return {
            "name": self.name,
            "format": self.format,
            "root": str(self.root),
            "split": self.split,
            "classes": list(self.classes),
            "image_dir": str(self.image_dir),
        }


def guess_image_dir(annotation_json: Path) -> Path:
    """COCO's usual layout: annotations/instances_val2017.json beside val2017/."""
    split = annotation_json.stem.split("_", 1)[-1]
    candidates = [annotation_json.parent.parent / split, annotation_json.parent / split]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DatasetError(
        f"{annotation_json}: no image folder given and none found at "
        f"{' or '.join(map(str, candidates))}; pass image_dir"
    )
