"""Flow: superpixels for every ingested image."""

from __future__ import annotations

from prefect import flow

from flows.common import DEFAULT_BATCH_SIZE, StageSummary, prepare_stage, run_stage_batches
from tasks.superpixels import STAGE, superpixels_batch
from wsss_core.store import INGEST_STAGE, Workspace
from wsss_core.superpixels import SuperpixelConfig


@flow(name="superpixels")
def superpixels_flow(
    workspace: str,
    config: SuperpixelConfig = SuperpixelConfig(),
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> StageSummary:
    ws = Workspace(workspace).require()
    key = prepare_stage(ws, STAGE, config, [INGEST_STAGE])
    return run_stage_batches(
        superpixels_batch, ws, STAGE, key, ws.image_ids(), batch_size=batch_size, progress=progress, config=config
    )
