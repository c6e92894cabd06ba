"""Reading results: `wsss compare` (MLflow runs best first), `wsss report` (the HTML page),
`wsss ui` (MLflow's UI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.app import WorkspaceOpt


def compare(
    workspace: Annotated[
        Optional[list[Path]], typer.Option("--workspace", "-w", help="A workspace whose MLflow store to read (repeatable: read together).")
    ] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="A tracking store shared by workspaces (e.g. sqlite:///runs.db, http://127.0.0.1:5000).")] = None,
    experiment: Annotated[Optional[str], typer.Option(help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else wsss).")] = None,
    metric: Annotated[str, typer.Option(help="Metric to rank by (miou, iou/<class>, pixel_accuracy: percent; or a training's loss).")] = "miou",
    filter_: Annotated[
        Optional[str], typer.Option("--filter", help="MLflow search filter, e.g. \"params.split = 'val' and params.round = '0'\".")
    ] = None,
    ascending: Annotated[bool, typer.Option("--ascending", help="Lowest first (for a loss).")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many runs.", min=1)] = 50,
) -> None:
    """Runs sorted by a metric, best first, with only the params that differ between them: which setting won."""
    from wsss_core.experiments import compare_runs
    from wsss_core.tracking import experiment_name

    typer.echo(compare_runs(workspace or [], tracking_uri, experiment or experiment_name(), metric, filter_ or "", ascending, limit))


def report(
    workspace: WorkspaceOpt,
    out: Annotated[Optional[Path], typer.Option(help="The HTML file to write (default: WS/reports/report.html).")] = None,
    sample: Annotated[int, typer.Option(help="Images in the overlay sample.", min=0)] = 8,
    worst: Annotated[int, typer.Option(help="Worst images shown.", min=0)] = 8,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="List the workspace's MLflow runs (read-only).")] = True,
) -> None:
    """A self-contained HTML page of the workspace: dataset, results, overlays, worst images, stages, configs, MLflow runs."""
    from wsss_core.report import ReportConfig, write_report

    typer.echo(str(write_report(workspace, out, ReportConfig(sample=sample, worst=worst, mlflow=mlflow))))


def ui(
    workspace: WorkspaceOpt,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = 5000,
) -> None:
    """MLflow's UI on the workspace's tracking store, on 127.0.0.1, until Ctrl-C."""
    from wsss_core.experiments import serve_ui

    if serve_ui(workspace, port, lambda line: typer.echo(line, err=True)) != 0:
        raise typer.Exit(1)  # the server stopped by itself (its messages are above)
