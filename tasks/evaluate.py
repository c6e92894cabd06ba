"""Accumulate confusion matrices of mask stages against GT over a batch of images."""

from __future__ import annotations

from prefect import task

from wsss_core.metrics import ConfusionMatrix
from wsss_core.store import Workspace


@task(name="evaluate-batch", retries=2, retry_delay_seconds=2, persist_result=False)
def evaluate_batch(workspace: Workspace, stages: list[str], image_ids: list[str]) -> dict[str, ConfusionMatrix]:
    """Images without GT or without a finished mask for a stage are left out of that stage."""
    num_classes = len(workspace.classes)
    matrices = {stage: ConfusionMatrix(num_classes) for stage in stages}
    done = {stage: workspace.done_ids(stage) for stage in stages}
    for image_id in image_ids:
        if not workspace.has_array("gt", image_id):
            continue
        gt = workspace.read_array("gt", image_id)
        for stage in stages:
            if image_id in done[stage]:
                matrices[stage].update(workspace.read_array(stage, image_id), gt)
    return matrices
