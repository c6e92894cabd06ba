"""`wsss check`: read back every stored array, repair the unreadable (no Prefect, no server start)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from wsss_core.check import CheckReport, Problem, check_workspace, done_images
from wsss_core.store import Workspace


def run_check(workspace: Path, progress: bool = True) -> CheckReport:
    """Check the workspace and print what was checked and repaired (stderr)."""
    console = Console(stderr=True, soft_wrap=True)
    ws = Workspace(workspace).require()
    total = sum(len(ids) for ids in done_images(ws).values())

    def show(problem: Problem) -> None:
        console.print(
            f"[red]unreadable[/red] {escape(problem.stage)} {escape(problem.image_id)}: "
            f"{escape(problem.path)}: {escape(problem.error)}"
        )

    with Progress(
        TextColumn("[bold]check"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=not progress,
    ) as bar:
        task = bar.add_task("check", total=total)
        report = check_workspace(ws, on_image=lambda *_: bar.advance(task), on_problem=show)
    table = Table("stage", "images checked", "repaired")
    repaired = report.repaired
    for stage, checked in report.checked.items():
        table.add_row(stage, str(checked), str(repaired.get(stage, 0)))
    console.print(table)
    console.print(f"read {report.arrays} arrays of {total} done images")
    if report.tracking_store is not None:
        console.print(f"[yellow]{escape(report.tracking_store.path)}: {escape(report.tracking_store.error)}[/yellow]")
    if report.problems:
        console.print(
            f"[yellow]{len(report.problems)} image(s) were marked not done and recorded as failed; "
            f"run `wsss retry-failed --workspace {escape(str(workspace))}` or re-run the command to recompute them "
            "(`wsss ingest` for ingest)[/yellow]"
        )
    return report
