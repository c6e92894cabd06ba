"""Class lists: PASCAL VOC's, or a dataset's own classes.txt."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from wsss_core.data.image_io import file_present, read_bytes
from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError, DatasetError

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

CLASS_LIST_FILE = "classes.txt"


def check_class_list(classes: list[str], source: str | Path) -> list[str]:
    """A usable class list: at least background + one class, unique names, fits uint8 masks."""
    if len(classes) < 2:
        raise DatasetError(f"{source}: needs at least 2 classes (background first), found {len(classes)}")
    if len(classes) > IGNORE_INDEX:
        raise DatasetError(
            f"{source}: {len(classes)} classes do not fit uint8 masks "
            f"(at most {IGNORE_INDEX}; {IGNORE_INDEX} is void)"
        )
    duplicates = sorted(name for name, count in Counter(classes).items() if count > 1)
    if duplicates:
        raise DatasetError(f"{source}: duplicate class names: {', '.join(duplicates)}")
    return classes


def _class_list_bytes(path: Path) -> bytes | None:
    """The bytes of a class list file; None when there is none. A path that holds no readable
    file (a directory, a broken link, no permission) is a DatasetError, not "use VOC's classes"."""
    try:
        return read_bytes(path) if file_present(path, "a class list file") else None
    except BadInputError as error:
        raise DatasetError(str(error)) from None


def read_class_list(root: str | Path) -> list[str]:
    """ROOT/classes.txt (one name a line, background first, blank lines ignored); VOC's 21 only
    when there is no such file at all."""
    path = Path(root) / CLASS_LIST_FILE
    data = _class_list_bytes(path)
    if data is None:
        return list(VOC_CLASSES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return check_class_list(names, path)
