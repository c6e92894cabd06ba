"""Flow: superpixels for every ingested image, with the settings the GraphNet path uses."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow

from flows.common import Execution, announce, outcome
from flows.pipeline import Pipeline, PipelineRun, Stage, run_pipeline
from tasks.superpixels import STAGE, superpixels_batch
from wsss_core.config import apply_overrides
from wsss_core.graphnet.config import resolve_config
from wsss_core.requests import SuperpixelsRequest
from wsss_core.store import IMAGES, Workspace


@flow(name="superpixels")
def superpixels_flow(
    workspace: str,
    request: SuperpixelsRequest = SuperpixelsRequest(),
    execution: Execution = Execution(),
    only_ids: list[str] | None = None,
) -> PipelineRun:
    """Superpixels as the GraphNet preset computes them (auto: the one `wsss graphnet` would
    pick), so the graphnet run that follows reuses them; request.overrides: SuperpixelConfig
    values by name, e.g. {"compactness": 20}. only_ids: re-run just these images (a retry).
    Ends Failed (with the count) when images failed; the result is still returned."""
    ws = Workspace(workspace).require()
    resolved = resolve_config(request.preset)
    config = apply_overrides(resolved.config.superpixels, request.overrides, "superpixels")
    announce(f"superpixels: {config} (GraphNet preset {resolved.preset})")
    pipeline = Pipeline(STAGE, (Stage(STAGE, superpixels_batch, (IMAGES,), {"config": config}),))
    if only_ids is None:  # a retry keeps the request it retries
        ws.remember_request(STAGE, "flows.superpixels:superpixels_flow", replace(request, preset=resolved.preset).to_dict())
    run = run_pipeline(ws, pipeline, execution, ws.select_ids(request.splits), only=only_ids)
    return outcome(run, run.summaries, workspace)
