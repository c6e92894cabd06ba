"""`wsss stack up|status|down`: a local production stack in one folder (wsss_core/stack.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

stack_app = typer.Typer(
    help="PostgreSQL, a Prefect server and an MLflow server on it, a Dask scheduler and workers, a Prefect "
    "process worker: on 127.0.0.1, every datum under --dir. `eval \"$(wsss stack up --dir DIR)\"` points "
    "later commands at it.",
    no_args_is_help=True,
)

DirOpt = Annotated[Path, typer.Option("--dir", help="The stack's folder: its databases, artifacts, logs, pids.")]


def _say(line: str) -> None:
    typer.echo(line, err=True)


@stack_app.command("up")
def stack_up(
    dir_: DirOpt,
    dask_workers: Annotated[int, typer.Option(help="Dask worker processes (one thread each).", min=0)] = 2,
    crash_after: Annotated[
        int, typer.Option(help="Seconds without a heartbeat (every 30 s) after which a flow run whose process is gone is marked Crashed.", min=31)
    ] = 90,
) -> None:
    """Start the stack (or what of it is down) and print its environment as `export` lines."""
    from wsss_core.stack import StackConfig, export_lines, up

    state = up(dir_, StackConfig(dask_workers=dask_workers, crash_after_s=crash_after), say=_say)
    for line in export_lines(state):
        typer.echo(line)


@stack_app.command("status")
def stack_status(dir_: DirOpt) -> None:
    """Each service: up or down, pid, address."""
    from wsss_core.stack import status

    for service in status(dir_):
        typer.echo(f"{service['name']:16} {'up' if service['up'] else 'down':5} pid {service['pid']:<8} {service['address']}")


@stack_app.command("down")
def stack_down(dir_: DirOpt) -> None:
    """Stop every process `up` started (and what they spawned); the data stays under --dir."""
    from wsss_core.stack import down

    down(dir_, say=_say)
