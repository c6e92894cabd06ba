"""What every dataset reader offers, and the one factory that opens them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from wsss_core.data.coco import CocoReader
from wsss_core.data.image_io import ReadOptions
from wsss_core.data.sample import Sample
from wsss_core.data.voc import VocReader
from wsss_core.errors import DatasetError

FORMATS = ("voc", "coco")


@runtime_checkable
class DatasetReader(Protocol):
    """A dataset: its identity and classes, its image ids, and one Sample per id.

    ``load`` raises BadInputError for a problem with one image; ``image_ids`` raises
    DatasetError when the dataset as a whole is unusable.
    """

    name: str
    root: Path
    classes: list[str]
    format: str

    def image_ids(self) -> list[str]: ...

    def load(self, image_id: str) -> Sample: ...

    def sources(self, image_id: str) -> dict[str, Path | bytes | None]:
        """What feeds one image, by role (files, or bytes standing for them), None where absent:
        ingest fingerprints them to notice a change (wsss_core.data.fingerprints)."""
        ...

    def describe(self) -> dict[str, Any]: ...


def open_reader(
    root_or_json: str | Path,
    format: str = "voc",
    split: str = "train",
    scribbles_dir: str | Path | None = None,
    image_dir: str | Path | None = None,
    options: ReadOptions = ReadOptions(),
) -> DatasetReader:
    """A reader for a VOC-layout root, or a COCO instances JSON (its split is the file's stem)."""
    if format == "voc":
        if image_dir is not None:
            raise DatasetError("image_dir is for COCO; a VOC-layout dataset keeps its images in ROOT/JPEGImages")
        return VocReader(root_or_json, split=split, scribbles_dir=scribbles_dir, options=options)
    if format == "coco":
        if scribbles_dir is not None:
            raise DatasetError("scribbles_dir is for VOC-layout datasets; the COCO reader reads no scribbles")
        return CocoReader(root_or_json, image_dir=image_dir, options=options)
    raise DatasetError(f"unknown dataset format {format!r} (known: {', '.join(FORMATS)})")
