"""Edits a user makes to a VOC-layout dataset between two runs, for the tests of changing data.

Each function changes files the way an annotator or a data engineer would (a fixed scribble,
an image replaced, an id dropped from a list, new images) and returns what it changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.data.image_io import save_palette_png

SPLIT_DIR = Path("ImageSets") / "Segmentation"
# An image's files in the VOC layout, by folder and suffix.
IMAGE_FILES = (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"), ("scribbles", ".png"), ("Annotations", ".xml"))


def fix_scribble(root: Path, image_id: str) -> None:
    """An annotator's correction: a stroke of the image's first foreground class across its middle rows."""
    path = root / "scribbles" / f"{image_id}.png"
    scribble = np.array(Image.open(path))
    classes = [int(v) for v in np.unique(scribble) if v not in (0, 255)]
    height, width = scribble.shape
    scribble[height // 2 - 1 : height // 2 + 1, width // 4 : 3 * width // 4] = classes[0] if classes else 1
    save_palette_png(path, scribble)


def change_gt(root: Path, image_id: str) -> None:
    """A corrected GT mask: a block of it set to void."""
    path = root / "SegmentationClass" / f"{image_id}.png"
    gt = np.array(Image.open(path))
    gt[: gt.shape[0] // 3, : gt.shape[1] // 3] = 255
    save_palette_png(path, gt)


def move_first_box(root: Path, image_id: str, dx: int = 3) -> None:
    """A box nudged right by dx pixels (its VOC XML rewritten)."""
    path = root / "Annotations" / f"{image_id}.xml"
    text = path.read_text()
    for tag in ("xmin", "xmax"):
        start = text.index(f"<{tag}>") + len(tag) + 2
        end = text.index(f"</{tag}>", start)
        text = text[:start] + str(int(float(text[start:end])) + dx) + text[end:]
    path.write_text(text)


def copy_image_files(source_root: Path, source_id: str, root: Path, image_id: str) -> None:
    """Every file of source_root's image source_id, as root's image image_id (replacing what is there)."""
    for folder, suffix in IMAGE_FILES:
        source = source_root / folder / f"{source_id}{suffix}"
        if source.is_file():
            (root / folder).mkdir(parents=True, exist_ok=True)
            target = root / folder / f"{image_id}{suffix}"
            if suffix == ".xml":  # VOC XML names its image file
                target.write_text(source.read_text().replace(source_id, image_id))
            else:
                shutil.copyfile(source, target)


def split_ids(root: Path, split: str) -> list[str]:
    return (root / SPLIT_DIR / f"{split}.txt").read_text().split()


def write_split(root: Path, split: str, ids: list[str]) -> None:
    (root / SPLIT_DIR / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def remove_from_split(root: Path, image_id: str, split: str = "train") -> None:
    write_split(root, split, [i for i in split_ids(root, split) if i != image_id])


def add_images(root: Path, donor_root: Path, donor_ids: list[str], split: str = "train", prefix: str = "new") -> list[str]:
    """donor_root's images (another generated dataset: other content) join root's split as new ids."""
    added = []
    for donor_id in donor_ids:
        image_id = f"{prefix}_{donor_id}"
        copy_image_files(donor_root, donor_id, root, image_id)
        added.append(image_id)
    write_split(root, split, split_ids(root, split) + added)
    return added


def change_dataset(root: Path, donor_root: Path, split: str = "train") -> dict[str, list[str]]:
    """The change the scheduled-run test makes between two runs: one scribble fixed, one image
    replaced (image, GT, scribble and annotation from the donor), one id removed from the split,
    two images added. Returns the ids by kind of change."""
    ids = split_ids(root, split)
    donors = sorted(p.stem for p in (donor_root / "JPEGImages").glob("*.jpg"))
    fixed, replaced, removed = ids[0], ids[1], ids[2]
    fix_scribble(root, fixed)
    copy_image_files(donor_root, donors[0], root, replaced)
    remove_from_split(root, removed, split)
    added = add_images(root, donor_root, donors[1:3], split)
    return {"fixed": [fixed], "replaced": [replaced], "removed": [removed], "added": added}
