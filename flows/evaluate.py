"""Flow: mIoU of mask stages against GT, printed as a table and logged to MLflow."""

from __future__ import annotations

import json
import time

from prefect import flow

from flows.common import DEFAULT_BATCH_SIZE, announce
from tasks.evaluate import evaluate_batch
from wsss_core.errors import WorkspaceError
from wsss_core.metrics import ConfusionMatrix, format_iou_table
from wsss_core.registries import mask_method_of_stage
from wsss_core.runner import split_batches
from wsss_core.store import Workspace
from wsss_core.tracking import tracked_run

REPORT_DIR = "reports"


def score_stages(
    workspace: str, stages: list[str], run_name: str, batch_size: int, log_to_mlflow: bool, splits: list[str] | None
) -> dict[str, dict]:
    ws = Workspace(workspace).require()
    missing = [s for s in stages if ws.stage_meta(s) is None]
    if missing:
        raise WorkspaceError(f"{ws.path}: cannot evaluate {', '.join(missing)}: not computed yet")
    batches = split_batches(ws.select_ids(splits), batch_size)
    futures = [evaluate_batch.submit(ws, stages, batch) for batch in batches]
    totals = {stage: ConfusionMatrix(len(ws.classes)) for stage in stages}
    for future in futures:
        for stage, matrix in future.result().items():
            totals[stage] = totals[stage].merge(matrix)
    announce(format_iou_table(totals, ws.classes))
    if len({matrix.images for matrix in totals.values()}) > 1:
        counts = ", ".join(f"{stage} {matrix.images}" for stage, matrix in totals.items())
        announce(f"the methods were scored on different images ({counts}): the others failed or are pending, see `wsss status`", warning=True)
    results = {stage: matrix.to_dict() for stage, matrix in totals.items()}
    report = ws.path / REPORT_DIR / f"evaluation-{run_name}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"time": time.time(), "splits": splits, "results": results}, indent=1))
    if log_to_mlflow:
        log_evaluation(ws, run_name, stages, totals)
    return results


@flow(name="evaluate")
def evaluate_flow(
    workspace: str,
    stages: list[str],
    run_name: str = "evaluate",
    batch_size: int = 4 * DEFAULT_BATCH_SIZE,
    log_to_mlflow: bool = True,
    splits: list[str] | None = None,
) -> dict[str, dict]:
    """Returns {stage: ConfusionMatrix.to_dict()}; also writes reports/evaluation-<run_name>.json."""
    return score_stages(workspace, stages, run_name, batch_size, log_to_mlflow, splits)


def log_evaluation(ws: Workspace, run_name: str, stages: list[str], totals: dict[str, ConfusionMatrix]) -> None:
    import mlflow

    params = {"dataset": ws.dataset.get("name"), "stages": {s: ws.stage_meta(s) for s in stages}}
    with tracked_run(ws.path, run_name, params, tags={"kind": "evaluation"}):
        for stage, matrix in totals.items():
            prefix = stage.replace("/", ".")
            mlflow.log_metric(f"{prefix}.mIoU", matrix.miou())
            for name, value in zip(ws.classes, matrix.iou()):
                if value == value:  # not nan
                    mlflow.log_metric(f"{prefix}.IoU.{name}", float(value))


def evaluation_stages(ws: Workspace, supervision: str, computed: list[str]) -> list[str]:
    """The masks this run computed plus every other finished, non-stale mask stage of the same
    supervision (so one table compares them), baselines first."""
    stages = set(computed)
    for stage in ws.stages():
        found = mask_method_of_stage(stage)
        if found and found[1].supervision == supervision and not stale_chain(ws, stage) and ws.done_ids(stage):
            stages.add(stage)

    def order(stage: str) -> tuple[bool, str]:
        found = mask_method_of_stage(stage)
        return (not (found and found[1].baseline), stage)

    return sorted(stages, key=order)


def has_ground_truth(ws: Workspace) -> bool:
    return any(ws.has_array("gt", i) for i in ws.image_ids())


def evaluate_path(
    ws: Workspace, supervision: str, computed: list[str], run_name: str, log_to_mlflow: bool, splits: list[str] | None
) -> dict[str, dict] | None:
    """Score a path's masks against GT; None (with a note) when the workspace has no GT."""
    if not has_ground_truth(ws):
        announce("evaluate: no ground-truth masks in this workspace; nothing to score")
        return None
    stages = evaluation_stages(ws, supervision, computed)
    return evaluate_flow(str(ws.path), stages, run_name=run_name, log_to_mlflow=log_to_mlflow, splits=splits)


def stale_chain(ws: Workspace, stage: str) -> bool:
    """True when the stage, or any stage it reads from directly or indirectly, is stale."""
    seen: set[str] = set()
    pending = [stage]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if ws.is_stale(current):
            return True
        pending.extend((ws.stage_meta(current) or {}).get("upstream", {}))
    return False
