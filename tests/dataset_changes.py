"""A dataset that changes between two runs, the way a real one does between two nightly runs.

`change_dataset(root)` edits, in place, a VOC-layout dataset written by
`wsss_core.data.synthetic.generate_dataset`:

- **fixed scribble**: one image's scribble PNG gets a corrected stroke (pixels relabelled with
  the class the GT has there); its JPEG, GT and XML stay as they are;
- **replaced image**: one image's JPEG, GT, scribble and XML are replaced by those of another
  generated image, under the same id;
- **removed image**: one id is removed from the split list (and from trainval.txt, which
  lists train and val together); its files stay on disk, as when a list is edited;
- **added images**: two new images (every file) are written and appended to the split list
  (and to trainval.txt).

It returns a dict saying which ids (see `change_dataset`), so a test can check what a
workspace made of each. The same call on the same generated dataset makes the same change.
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

SPLIT_DIR = Path("ImageSets") / "Segmentation"
IGNORE = 255


def read_split(root: Path, split: str) -> list[str]:
    return (root / SPLIT_DIR / f"{split}.txt").read_text().split()


def write_split(root: Path, split: str, ids: list[str]) -> None:
    (root / SPLIT_DIR / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


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


def change_dataset(root: str | Path, split: str = "train") -> dict[str, Any]:
    """Change a generated dataset in place (see the module docstring); the split must list three
    images at least. The first three ids of the split (sorted) are the fixed, replaced and removed
    ones; new images take the next free synthetic ids.

    Returns {"fixed_scribble": id, "fixed_pixels": n, "replaced": id, "removed": id,
    "added": [id, id], "ids": the split's ids after the change, sorted}.
    """
    root = Path(root)
    config = synthetic_config(root)
    before = read_split(root, split)
    if len(set(before)) < 3:
        raise ValueError(f"{root}: {split}.txt lists {len(set(before))} image(s); the change needs 3")
    fixed, replaced, removed = sorted(set(before))[:3]
    taken = [int(p.stem.rsplit("_", 1)[1]) for p in (root / "JPEGImages").glob("synth_*.jpg")]
    free = max(taken, default=-1) + 1
    added = [image_id(free), image_id(free + 1)]

    fixed_pixels = fix_scribble(root, fixed)
    # Another generated image (the next free index after the added ones) under the replaced id.
    write_sample(root, dataclasses.replace(generate_sample(free + 2, config), image_id=replaced))
    for index in (free, free + 1):
        write_sample(root, generate_sample(index, config))  # ids image_id(free), image_id(free + 1)

    lists = [split] + (["trainval"] if split != "trainval" and (root / SPLIT_DIR / "trainval.txt").exists() else [])
    for name in lists:
        ids = [i for i in read_split(root, name) if i != removed]
        write_split(root, name, ids + [i for i in added if i not in ids])
    return {
        "fixed_scribble": fixed,
        "fixed_pixels": fixed_pixels,
        "replaced": replaced,
        "removed": removed,
        "added": added,
        "ids": sorted(read_split(root, split)),
    }
