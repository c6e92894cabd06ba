"""What every path flow (graphnet, affinitynet, segment) does around its stage table, once:

    plan (the request resolved and announced, by the path's flow) -> MLflow run -> table
        -> remember the request -> run_pipeline -> remember each mask set's settings -> evaluate

A path flow only builds its PathPlan; run_path is the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.pipeline import Pipeline, PipelineRun, run_pipeline
from flows.tracking import flow_run_tracking, remember_mask_settings
from wsss_core.requests import PathRequest
from wsss_core.store import Workspace
from wsss_core.tracking import Tracking


@dataclass
class PathPlan:
    """A path request resolved, before anything runs.

    flow: the flow `module:name` a retry calls; remembered: the request as a retry must repeat
    it (its preset resolved, so that `auto` cannot pick another one); settings: what the run
    is, readable (MLflow params), of which `inherit` names those the nested runs inherit;
    config: the resolved typed config; table: the stage table, given the flow run's MLflow run
    (None: off) for the trainings' nested runs; mask_settings: a finished mask stage's settings
    as remembered for it; evaluate: (the run, its report name) -> the evaluation.
    """

    kind: str
    flow: str
    remembered: PathRequest
    settings: dict[str, Any]
    config: Any
    image_ids: list[str]
    table: Callable[[Tracking | None], Pipeline]
    mask_settings: Callable[[str], dict[str, Any]]
    evaluate: Callable[[PipelineRun, str], dict | None]
    inherit: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)


def run_path(ws: Workspace, plan: PathPlan, request: PathRequest, execution: Any, only_ids: list[str] | None) -> PipelineRun:
    """The plan's table on its images (only_ids: just these, a retry), tracked, remembered, evaluated."""
    inherit = {name: plan.settings[name] for name in plan.inherit}
    with flow_run_tracking(ws, request.log_to_mlflow, plan.kind, plan.settings, plan.config, inherit) as tracking:
        pipeline = plan.table(tracking)
        run = PipelineRun(pipeline.name, notes=dict(plan.notes))
        if only_ids is None:  # a retry keeps the request it retries
            ws.remember_request(pipeline.name, plan.flow, plan.remembered.to_dict())
        run = run_pipeline(ws, pipeline, execution, plan.image_ids, request.until, run, only=only_ids)
        remember_mask_settings(ws, {stage: plan.mask_settings(stage) for stage in run.mask_stages})
        if request.evaluate and request.until is None:
            run.evaluation = plan.evaluate(run, request.run_name or pipeline.name)
    return run
