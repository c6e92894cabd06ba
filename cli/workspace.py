"""Looking after a workspace: `wsss status`, `wsss check`, `wsss gc` (no Prefect; the printing is
cli/status.py and cli/check.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.app import WorkspaceOpt, fail
from wsss_core.errors import WsssError


def status(
    workspace: WorkspaceOpt,
    all_failures: Annotated[bool, typer.Option("--all", help="List every failed image, not the first 20.")] = False,
    worst: Annotated[int, typer.Option("--worst", help="Lowest-confidence images listed per mask set.", min=0)] = 3,
) -> None:
    """Per-stage counts of done / failed / pending images, the failed images with their errors, and per
    mask set its median confidence and lowest-confidence images (the ones to check by hand)."""
    from cli.status import print_status

    print_status(workspace, all_failures, worst)


def check(
    workspace: WorkspaceOpt,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Read back every stored array of every done image; an unreadable one is marked not done
    (a failure record in the stage that wrote it) so that the next run recomputes it.
    Exit 0: all readable; 1: something was repaired."""
    from cli.check import run_check

    try:
        report = run_check(workspace, progress)
    except WsssError as error:
        fail(str(error))
    if report.problems or report.tracking_store is not None:
        raise typer.Exit(1)


def gc(workspace: WorkspaceOpt) -> None:
    """Delete the arrays, pack rows, markers and records of images no split list names any more
    (they are in no result already); prints what went and the bytes freed. Run it while no run
    writes to the workspace. An image that comes back later is read again."""
    from wsss_core.garbage import collect_garbage
    from wsss_core.store import Workspace

    try:
        report = collect_garbage(Workspace(workspace))
    except WsssError as error:
        fail(str(error))
    typer.echo(report.line(), err=True)
