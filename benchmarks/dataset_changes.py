"""A dataset that changes between two runs, the way a real one does between two nightly runs.

Edits, in place, of a VOC-layout dataset written by `wsss_core.data.synthetic.generate_dataset`,
each as an annotator or a data engineer makes it, and `array_differences`, which says where two
workspaces hold other arrays. `change_dataset(root)` makes the scheduled-run test's change:

- **fixed scribble**: one image's scribble PNG gets a corrected stroke (pixels relabelled with
  the class the GT has there); its JPEG, GT and XML stay as they are;
- **replaced image**: one image's JPEG, GT, scribble and XML are replaced by those of another
  generated image, under the same id;
- **removed image**: one id is removed from the split list (and from trainval.txt, which
  lists train and val together); its files stay on disk, as when a list is edited;
- **added images**: two new images (every file) are written and appended to the split list
  (and to trainval.txt).

The same call on the same generated dataset makes the same change. Tests and
benchmarks/changes.py share these.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsss_core.data.image_io import save_palette_png
from wsss_core.data.synthetic import SyntheticConfig, generate_sample, image_id, write_sample
from wsss_core.store import Workspace

SPLIT_DIR = Path("ImageSets") / "Segmentation"
IGNORE = 255


def read_split(root: Path, split: str) -> list[str]:
    return (root / SPLIT_DIR / f"{split}.txt").read_text().split()


def write_split(root: Path, split: str, ids: list[str]) -> None:
    (root / SPLIT_DIR / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def lists_of(root: Path, split: str) -> list[str]:
    """The split and, when it is part of it, trainval."""
    return [split] + (["trainval"] if split != "trainval" and (root / SPLIT_DIR / "trainval.txt").exists() else [])


def synthetic_config(root: Path) -> SyntheticConfig:
    """The config the dataset was generated with (its synthetic.json)."""
    try:
        metadata = json.loads((root / "synthetic.json").read_text())
    except OSError as error:
        raise ValueError(f"{root}: not a dataset written by generate_dataset ({error})") from None
    return SyntheticConfig(**metadata["config"])


def fix_scribble(root: Path, image: str) -> int:
    """Add a corrected stroke to an image's scribble: along the middle row of each GT class region,
    the pixels the scribble leaves unlabelled or labels otherwise get the GT's class (the first
    class, in index order, that has such pixels). Returns how many pixels changed."""
    path = root / "scribbles" / f"{image}.png"
    scribble = np.array(Image.open(path))
    gt = np.array(Image.open(root / "SegmentationClass" / f"{image}.png"))
    for label in [c for c in np.unique(gt).tolist() if c != IGNORE]:
        rows = np.nonzero((gt == label).any(axis=1))[0]
        row = int(rows[len(rows) // 2])
        wrong = (gt[row] == label) & (scribble[row] != label)
        if wrong.any():
            fixed = scribble.copy()
            fixed[row, wrong] = label
            save_palette_png(path, fixed)
            return int(wrong.sum())
    raise ValueError(f"{image}: its scribble agrees with the GT everywhere a stroke could go; nothing to fix")


def change_gt(root: Path, image: str) -> None:
    """A corrected GT mask: its top-left ninth set to void."""
    path = root / "SegmentationClass" / f"{image}.png"
    gt = np.array(Image.open(path))
    gt[: gt.shape[0] // 3, : gt.shape[1] // 3] = IGNORE
    save_palette_png(path, gt)


def move_first_box(root: Path, image: str, dx: int = 3) -> None:
    """The image's first box nudged right by dx pixels (its VOC XML rewritten)."""
    path = root / "Annotations" / f"{image}.xml"
    text = path.read_text()
    for tag in ("xmin", "xmax"):
        start = text.index(f"<{tag}>") + len(tag) + 2
        end = text.index(f"</{tag}>", start)
        text = text[:start] + str(int(float(text[start:end])) + dx) + text[end:]
    path.write_text(text)


def free_index(root: Path) -> int:
    """The first synthetic index no image file of root uses."""
    taken = [int(p.stem.rsplit("_", 1)[1]) for p in (root / "JPEGImages").glob("synth_*.jpg")]
    return max(taken, default=-1) + 1


def replace_image(root: Path, image: str, index: int | None = None) -> None:
    """Another generated image (index: default the first free one) under the same id: every file."""
    sample = generate_sample(free_index(root) if index is None else index, synthetic_config(root))
    write_sample(root, dataclasses.replace(sample, image_id=image))


def add_images(root: Path, count: int, split: str = "train") -> list[str]:
    """count new generated images (every file), appended to the split list (and trainval)."""
    first = free_index(root)
    added = [image_id(index) for index in range(first, first + count)]
    for index in range(first, first + count):
        write_sample(root, generate_sample(index, synthetic_config(root)))
    for name in lists_of(root, split):
        ids = read_split(root, name)
        write_split(root, name, ids + [i for i in added if i not in ids])
    return added


def remove_from_split(root: Path, image: str, split: str = "train") -> None:
    """The id leaves the split list (and trainval); its files stay on disk."""
    for name in lists_of(root, split):
        write_split(root, name, [i for i in read_split(root, name) if i != image])


def change_dataset(root: str | Path, split: str = "train") -> dict[str, Any]:
    """Change a generated dataset in place (see the module docstring); the split must list three
    images at least. The first three ids of the split (sorted) are the fixed, replaced and removed
    ones; new images take the next free synthetic ids.

    Returns {"fixed_scribble": id, "fixed_pixels": n, "replaced": id, "removed": id,
    "added": [id, id], "ids": the split's ids after the change, sorted}.
    """
    root = Path(root)
    before = read_split(root, split)
    if len(set(before)) < 3:
        raise ValueError(f"{root}: {split}.txt lists {len(set(before))} image(s); the change needs 3")
    fixed, replaced, removed = sorted(set(before))[:3]
    fixed_pixels = fix_scribble(root, fixed)
    added = add_images(root, 2, split)
    replace_image(root, replaced)  # the next free index after the added ones
    remove_from_split(root, removed, split)
    return {
        "fixed_scribble": fixed,
        "fixed_pixels": fixed_pixels,
        "replaced": replaced,
        "removed": removed,
        "added": added,
        "ids": sorted(read_split(root, split)),
    }


def array_differences(scheduled: Workspace, clean: Workspace, image_ids: list[str]) -> list[str]:
    """Every (stage, image, array) where the first workspace holds something other than the
    clean one, for every stage of the clean run that stores per-image arrays."""
    differences = []
    for stage in clean.stages():
        if not clean.stores_arrays(stage):
            continue  # a dataset-level stage (the shared GCN fit): its images hold no arrays
        done = scheduled.done_ids(stage)
        for image in image_ids:
            if image not in done:
                differences.append(f"{stage} {image}: not done in the scheduled workspace")
                continue
            arrays = clean.image_arrays(stage, image) or [(stage, None)]
            theirs = scheduled.image_arrays(stage, image) or [(stage, None)]
            if theirs != arrays:
                differences.append(f"{stage} {image}: arrays {theirs}, clean run {arrays}")
                continue
            for group, name in arrays:
                a, b = scheduled.read_array(group, image, name), clean.read_array(group, image, name)
                if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                    where = f"{group}/{name}" if name else group
                    detail = (
                        f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"
                        if a.dtype != b.dtype or a.shape != b.shape
                        else f"{int(np.sum(a != b))} of {a.size} values differ"
                    )
                    differences.append(f"{stage} {image} {where}: {detail}")
    return differences
