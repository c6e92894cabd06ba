"""Flow: mIoU of mask stages against GT, printed as a table and logged to MLflow."""

from __future__ import annotations

import json
import time

from prefect import flow

from flows.common import DEFAULT_BATCH_SIZE, console
from tasks.evaluate import evaluate_batch
from wsss_core.errors import WorkspaceError
from wsss_core.metrics import ConfusionMatrix, format_iou_table
from wsss_core.runner import split_batches
from wsss_core.store import Workspace
from wsss_core.tracking import tracked_run

REPORT_DIR = "reports"


@flow(name="evaluate")
def evaluate_flow(
    workspace: str,
    stages: list[str],
    run_name: str = "evaluate",
    batch_size: int = 4 * DEFAULT_BATCH_SIZE,
    log_to_mlflow: bool = True,
) -> dict[str, dict]:
    """Returns {stage: ConfusionMatrix.to_dict()}; also writes reports/evaluation-<run_name>.json."""
    ws = Workspace(workspace).require()
    missing = [s for s in stages if ws.stage_meta(s) is None]
    if missing:
        raise WorkspaceError(f"{ws.path}: cannot evaluate {', '.join(missing)}: not computed yet")
    futures = [evaluate_batch.submit(ws, stages, batch) for batch in split_batches(ws.image_ids(), batch_size)]
    totals = {stage: ConfusionMatrix(len(ws.classes)) for stage in stages}
    for future in futures:
        for stage, matrix in future.result().items():
            totals[stage] = totals[stage].merge(matrix)
    console.print(format_iou_table(totals, ws.classes))
    results = {stage: matrix.to_dict() for stage, matrix in totals.items()}
    report = ws.path / REPORT_DIR / f"evaluation-{run_name}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"time": time.time(), "results": results}, indent=1))
    if log_to_mlflow:
        _log_evaluation(ws, run_name, stages, totals)
    return results


def _log_evaluation(ws: Workspace, run_name: str, stages: list[str], totals: dict[str, ConfusionMatrix]) -> None:
    import mlflow

    params = {"dataset": ws.dataset.get("name"), "stages": {s: ws.stage_meta(s) for s in stages}}
    with tracked_run(ws.path, run_name, params, tags={"kind": "evaluation"}):
        for stage, matrix in totals.items():
            prefix = stage.replace("/", ".")
            mlflow.log_metric(f"{prefix}.mIoU", matrix.miou())
            for name, value in zip(ws.classes, matrix.iou()):
                if value == value:  # not nan
                    mlflow.log_metric(f"{prefix}.IoU.{name}", float(value))
