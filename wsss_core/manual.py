"""A full mask a person drew: the best label an image can have, used in place of its pseudo masks.

`wsss review import` writes a person's full mask to the dataset's own folder for it
(VOC: ``SegmentationClassManual/<id>.png``), and ingest stores it as the ingested ``manual``
array, fingerprinted like every other source: a new, changed or removed manual mask reaches
exactly the stages that read ``manual`` (wsss_core.lineage).

Where a mask set is *used* (a segmentation round's training labels, `wsss export`, the review
export's pre-annotations), an image's manual mask replaces its mask of that set (`used_mask`).
The mask sets themselves stay what their method computed, so an evaluation never scores a
person's mask as a method's output against GT: it scores each mask set over every image, and
again without the images that have a manual mask (the split NO_MANUAL), since a round trained
on a person's mask for an image has seen that image's answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from wsss_core.store import Workspace

MANUAL = "manual"  # the ingested array
NO_MANUAL = "no-manual"  # the evaluation's column of the images without a manual mask


def manual_ids(workspace: Workspace, image_ids: Iterable[str] | None = None) -> list[str]:
    """The images (default: every image of the dataset) that have a manual mask, in order."""
    ids = workspace.image_ids() if image_ids is None else image_ids
    return [i for i in ids if workspace.has_array(MANUAL, i)]


def used_mask(workspace: Workspace, stage: str, image_id: str) -> np.ndarray:
    """The mask of `stage` that later stages use for an image: its manual mask where it has one."""
    if workspace.has_array(MANUAL, image_id):
        return workspace.read_array(MANUAL, image_id)
    return workspace.read_array(stage, image_id)


class UsedMaskColumn(Sequence):
    """A mask set's masks of some images as training labels, manual masks in their place,
    read when indexed (lazy and picklable, like store.ArrayColumn)."""

    def __init__(self, workspace: Workspace, stage: str, image_ids: Sequence[str]):
        self.workspace, self.stage, self.image_ids = workspace, stage, list(image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return used_mask(self.workspace, self.stage, self.image_ids[index])
