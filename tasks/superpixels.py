"""Superpixels for a batch of images."""

from __future__ import annotations

from prefect import task

from tasks.common import STAGE_TASK_OPTIONS, run_batch_in_task
from wsss_core.runner import BatchReport
from wsss_core.store import Workspace
from wsss_core.graphnet.superpixels import SuperpixelConfig, compute_superpixels

STAGE = "superpixels"


@task(name="superpixels-batch", **STAGE_TASK_OPTIONS)
def superpixels_batch(
    workspace: Workspace, stage: str, key: str, image_ids: list[str], config: SuperpixelConfig
) -> BatchReport:
    def step(image_id: str) -> None:
        labels = compute_superpixels(workspace.read_array("images", image_id), config)
        workspace.write_array(stage, image_id, labels)

    return run_batch_in_task(workspace, stage, key, image_ids, step)
