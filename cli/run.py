"""The whole pipeline: `wsss run`, `wsss retry-failed` and `wsss demo` (run on the built-in dataset,
then its results table and where to look)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.app import (
    DeviceOpt, EvaluateOpt, MlflowOpt, SetOpt, SplitOpt, WorkspaceOpt, call_flow, checked, finish, parse_settings,
    with_execution,
)
from wsss_core.registries import ENGINES, PATHS


def run(
    workspace: WorkspaceOpt,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML run config (see examples/run.yaml).")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Ingest this dataset first (VOC layout).")] = None,
    ingest_split: Annotated[Optional[list[str]], typer.Option(help="Splits to ingest with --root (default: train).")] = None,
    path: Annotated[
        Optional[list[str]], typer.Option(callback=checked(PATHS.names()), help="Only this path (repeatable; default: every path the weak labels allow).")
    ] = None,
    rounds: Annotated[
        Optional[int], typer.Option(help="Segmentation rounds on each supervision's best masks (default: the config's, 1; 0: none).", min=0)
    ] = None,
    set_: SetOpt = None,
    split: SplitOpt = None,
    device: DeviceOpt = None,
    evaluate: EvaluateOpt = True,
    mlflow: MlflowOpt = True,
    engine: Annotated[Optional[str], typer.Option(callback=checked(ENGINES.names()), help="Where batches run (default: the config's, threads).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel workers (default: CPU cores).", min=1)] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="Address of a running Dask scheduler.")] = None,
    run_name: Annotated[str, typer.Option(help="Name of the evaluation report, reports/evaluation-<name>.json.")] = "run",
) -> None:
    """The whole pipeline: (ingest) -> every applicable path (GraphNet scribbles / boxes, AffinityNet) -> segmentation rounds -> one evaluation table.

    Settings come from --config, then --set NAME=VALUE (e.g. --set graphnet.crf=true), then the options here.
    """
    settings = {**parse_settings(set_), **options_given({
        "ingest.root": (str(root) if root else None, None), "ingest.splits": (ingest_split, None), "paths": (path, None),
        "splits": (split, None), "device": (device, None), "execution.engine": (engine, None),
        "execution.workers": (workers, None), "execution.dask_address": (dask_address, None),
        "segmentation.rounds": (rounds, None), "evaluate": (evaluate, True), "mlflow": (mlflow, True),
    })}
    started = time.perf_counter()
    whole = call_run_flow(workspace, config, settings, run_name)
    if whole.report:
        typer.echo(f"report: {whole.report}", err=True)
    finish(whole.summaries, started)


@with_execution
def retry_failed(
    workspace: WorkspaceOpt,
    stage: Annotated[Optional[list[str]], typer.Option(help="Only the failures of this stage (repeatable; default: every stage).")] = None,
    ids: Annotated[Optional[list[str]], typer.Option("--ids", help="Only these images (repeatable; default: every failed image).")] = None,
    evaluate: EvaluateOpt = True,
    mlflow: MlflowOpt = True,
    execution: dict[str, Any] | None = None,
) -> None:
    """Re-run exactly the failed images: from the stage where each failed onwards, with the settings it ran with.

    Records of images the dataset no longer lists are dropped; those of images that now succeed are cleared.
    Exit 1 when images still fail (see `wsss status`).
    """
    started = time.perf_counter()
    whole = call_flow(
        "flows.retry:retry_failed_flow", workspace=str(workspace), stages=list(stage) if stage else None,
        ids=list(ids) if ids else None, evaluate=evaluate, log_to_mlflow=mlflow, execution=execution,
    )
    for name, why in whole.skipped.items():
        typer.echo(f"not retried: {name}: {why}", err=True)
    finish(whole.summaries, started)
    if whole.skipped:
        raise typer.Exit(1)


def demo(
    out: Annotated[Path, typer.Option(help="Where the demo writes its dataset (OUT/dataset) and workspace (OUT/workspace).")] = Path("demo"),
    images: Annotated[Optional[int], typer.Option(help="Images in the built-in dataset (default: the demo config's).", min=1)] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="The run config (default: examples/demo.yaml of this checkout).")
    ] = None,
    set_: SetOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    mlflow: MlflowOpt = True,
) -> None:
    """The whole pipeline on the built-in dataset: generate it (train and val) -> `wsss run` with the
    demo config (every path, a segmentation round each, evaluation, report) -> the results table.

    Exactly `wsss run --workspace OUT/workspace --config examples/demo.yaml --set ingest.root=OUT/dataset`;
    run again, it finds everything done.
    """
    from wsss_core.run_config import DEMO_CONFIG

    settings = {**parse_settings(set_), **options_given({
        "ingest.root": (str(out / "dataset"), None), "generate.images": (images, None),
        "execution.progress": (progress, True), "mlflow": (mlflow, True),
    })}
    workspace = out / "workspace"
    started = time.perf_counter()
    whole = call_run_flow(workspace, config or DEMO_CONFIG, settings, "demo")
    print_demo_summary(whole, workspace, mlflow)
    finish(whole.summaries, started)


def options_given(options: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """{setting: (option value, the value when the option is not given)} -> the settings of the
    options given (an empty repeatable option is not given)."""
    return {name: value for name, (value, unset) in options.items() if value != unset and value != []}


def call_run_flow(workspace: Path, config: Path | None, settings: dict[str, Any], run_name: str | None) -> Any:
    """flows.run:run_flow, as `wsss run` and `wsss demo` call it."""
    return call_flow(
        "flows.run:run_flow", workspace=str(workspace), config_file=str(config) if config else None,
        settings=settings or None, run_name=run_name,
    )


def tool_command(name: str) -> str:
    """How to call a command of this environment: its name when it is on PATH, else its path."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    found = shutil.which(name)
    if not beside.exists() or (found and Path(found).resolve() == beside.resolve()):
        return name
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def print_demo_summary(whole: Any, workspace: Path, mlflow: bool) -> None:
    """The results table (stdout), then where everything is and how to look at it."""
    import os

    from wsss_core.last_word import evaluation_mious, worse_last_rounds
    from wsss_core.report import results_text

    if whole.evaluation:
        typer.echo("\nmIoU (%) on the built-in synthetic dataset (round 0: the pseudo masks; * best of a column):")
        typer.echo(results_text(whole.evaluation))
        for worse in worse_last_rounds(evaluation_mious(whole.evaluation)):
            typer.echo(f"note: {worse.line()}")
    else:
        typer.echo("\nnothing was scored (see the messages above)")
    lines = [f"workspace: {workspace}"]
    if whole.report:
        lines.append(f"report:    {whole.report}")
    if mlflow:
        lines.append(f"MLflow UI: {tool_command('wsss')} ui --workspace {workspace}    (http://127.0.0.1:5000)")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        from flows.local_server import running_server, state_dir

        shared = running_server(state_dir())
        where = ("the local server commands share, until it idles: `wsss server status`" if shared and shared["api_url"] == api
                 else "the flow runs went to the server in PREFECT_API_URL")
        lines.append(f"Prefect UI: {api.rstrip('/').removesuffix('/api')} ({where})")
    else:
        from prefect.settings import get_current_settings

        lines.append(
            f"Prefect UI: {tool_command('prefect')} server start --host 127.0.0.1 --port 4200 --analytics-off    "
            f"(http://127.0.0.1:4200; the flow runs are in its database under {get_current_settings().home}; "
            "with export PREFECT_API_URL=http://127.0.0.1:4200/api later commands report to it live)"
        )
    typer.echo("\n".join(lines))
