"""Flow: superpixels for every ingested image, with the settings the GraphNet path uses."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import Execution, announce, outcome
from flows.pipeline import Pipeline, PipelineRun, Stage, run_pipeline
from tasks.superpixels import STAGE, superpixels_batch
from wsss_core.config import apply_overrides
from wsss_core.graphnet.config import resolve_config
from wsss_core.registries import AUTO
from wsss_core.store import IMAGES, Workspace


def run_superpixels(
    workspace: str,
    preset: str,
    overrides: dict[str, Any] | None,
    splits: list[str] | None,
    execution: Execution,
    only_ids: list[str] | None = None,
) -> PipelineRun:
    ws = Workspace(workspace).require()
    resolved = resolve_config(preset)
    config = apply_overrides(resolved.config.superpixels, overrides, "superpixels")
    announce(f"superpixels: {config} (GraphNet preset {resolved.preset})")
    pipeline = Pipeline(STAGE, (Stage(STAGE, superpixels_batch, (IMAGES,), {"config": config}),))
    if only_ids is None:  # a retry keeps the request it retries
        ws.remember_request(STAGE, "flows.superpixels:superpixels_flow", {
            "preset": resolved.preset, "overrides": overrides, "splits": splits,
        })
    return run_pipeline(ws, pipeline, execution, ws.select_ids(splits), only=only_ids)


@flow(name="superpixels")
def superpixels_flow(
    workspace: str,
    preset: str = AUTO,
    overrides: dict[str, Any] | None = None,
    splits: list[str] | None = None,
    only_ids: list[str] | None = None,
    execution: Execution = Execution(),
) -> PipelineRun:
    """Superpixels as the GraphNet preset computes them (auto: the one `wsss graphnet` would
    pick), so the graphnet run that follows reuses them; overrides: SuperpixelConfig values
    by name, e.g. {"compactness": 20}. only_ids: re-run just these images (a retry). Ends
    Failed (with the count) when images failed; the result is still returned."""
    run = run_superpixels(workspace, preset, overrides, splits, execution, only_ids)
    return outcome(run, run.summaries, workspace)
