"""Ingest: read a batch of images from a dataset reader into the workspace."""

from __future__ import annotations

import numpy as np
from prefect import task

from tasks.common import STAGE_TASK_OPTIONS, run_batch_in_task
from wsss_core.data.fingerprints import changed_sources, fingerprints
from wsss_core.data.readers import DatasetReader
from wsss_core.data.sample import Sample
from wsss_core.runner import BatchReport
from wsss_core.store import INGEST_ARRAYS, INGEST_STAGE, Workspace, check_image_id


def sample_arrays(sample: Sample) -> dict[str, np.ndarray]:
    """Every array of one image by group (gt, scribbles and manual only where it has them)."""
    arrays = {"images": sample.image}
    if sample.gt is not None:
        arrays["gt"] = sample.gt
    if sample.scribble is not None:
        arrays["scribbles"] = sample.scribble
    if sample.manual is not None:
        arrays["manual"] = sample.manual
    arrays["boxes"] = sample.boxes_array()
    arrays["tags"] = np.asarray(sample.tags, dtype=np.int32)
    return arrays


def write_sample(workspace: Workspace, sample: Sample) -> None:
    """Every array of one image; the caller writes the completion marker after."""
    for group, array in sample_arrays(sample).items():
        workspace.write_array(group, sample.image_id, array)


def changed_arrays(workspace: Workspace, image_id: str, arrays: dict[str, np.ndarray]) -> set[str]:
    """The ingested arrays of a done image that the new arrays differ from (appeared, went, or
    other values); every array when the stored ones cannot be read."""
    changed = set()
    for group in INGEST_ARRAYS:
        new = arrays.get(group)
        try:
            old = workspace.read_array(group, image_id) if workspace.has_array(group, image_id) else None
        except Exception:  # noqa: BLE001 - unreadable: take it as changed, everything after recomputes
            return set(INGEST_ARRAYS)
        if (old is None) != (new is None) or (
            old is not None and (old.shape != new.shape or old.dtype != new.dtype or not np.array_equal(old, new))
        ):
            changed.add(group)
    return changed


@task(name="ingest-batch", **STAGE_TASK_OPTIONS)
def ingest_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    reader: DatasetReader,
    redo: list[str] | None = None,
) -> BatchReport:
    """Read each new image, and each of `redo` (ingested, but a source changed since).

    A redone image's arrays are compared with the stored ones, and every stage that reads a
    changed one (through the recorded reads: Workspace.forget_downstream) forgets the image
    before the new arrays are written; a new image is forgotten everywhere (arrays left by an
    earlier ingest of the same id). The image's marker records its sources' fingerprints.
    An image whose redo fails leaves the dataset until it reads again.
    """
    again = set(redo or ())

    def step(image_id: str) -> list[str]:
        check_image_id(image_id)
        try:
            sources = fingerprints(reader.sources(image_id))  # before reading: a later edit is seen next run
            sample = reader.load(image_id)
        except Exception:
            if image_id in again:  # it changed and no longer reads: out of the dataset, and of every stage
                workspace.forget_downstream(image_id, INGEST_ARRAYS)
                workspace.forget(INGEST_STAGE, image_id)
            raise
        arrays = sample_arrays(sample)
        if image_id in again:
            changed = changed_arrays(workspace, image_id, arrays)
        else:  # new, or read again after its stored arrays were found unreadable (Workspace.invalidate)
            previous = workspace.previous_sources(image_id)
            changed = set(INGEST_ARRAYS) if previous is None or changed_sources(previous, sources) else set()
        workspace.forget_downstream(image_id, changed)
        write_sample(workspace, sample)
        workspace.describe_done(stage, image_id, key, sources=sources, changed=sorted(changed))
        workspace.drop_previous_sources(image_id)
        return sample.warnings

    return run_batch_in_task(workspace, stage, key, image_ids, step, redo=again)
