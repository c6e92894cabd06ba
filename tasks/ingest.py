"""Ingest: read a batch of images from a dataset reader into the workspace."""

from __future__ import annotations

import numpy as np
from prefect import task

from tasks.common import STAGE_TASK_OPTIONS, run_batch_in_task
from wsss_core.data.readers import DatasetReader
from wsss_core.data.sample import Sample
from wsss_core.runner import BatchReport
from wsss_core.store import Workspace, check_image_id


def write_sample(workspace: Workspace, sample: Sample) -> None:
    """Every array of one image; the caller writes the completion marker after."""
    image_id = sample.image_id
    workspace.write_array("images", image_id, sample.image)
    if sample.gt is not None:
        workspace.write_array("gt", image_id, sample.gt)
    if sample.scribble is not None:
        workspace.write_array("scribbles", image_id, sample.scribble)
    workspace.write_array("boxes", image_id, sample.boxes_array())
    workspace.write_array("tags", image_id, np.asarray(sample.tags, dtype=np.int32))


@task(name="ingest-batch", **STAGE_TASK_OPTIONS)
def ingest_batch(
    workspace: Workspace, stage: str, key: str, image_ids: list[str], reader: DatasetReader
) -> BatchReport:
    def step(image_id: str) -> list[str]:
        sample = reader.load(check_image_id(image_id))
        write_sample(workspace, sample)
        return sample.warnings

    return run_batch_in_task(workspace, stage, key, image_ids, step)
