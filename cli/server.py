"""`wsss server status|stop`: the local Prefect server that flow commands share (flows/local_server.py)."""

from __future__ import annotations

import typer

server_app = typer.Typer(
    help="The local Prefect server that flow commands share: the first one starts it, it stops "
    "itself after WSSS_SERVER_IDLE_S seconds (600) without a request. Not used where PREFECT_API_URL is set.",
    no_args_is_help=True,
)


@server_app.command("status")
def server_status() -> None:
    """Where the shared local Prefect server listens, and its UI."""
    from flows.local_server import running_server, state_dir

    record = running_server(state_dir())
    if record is None:
        typer.echo(f"not running (state: {state_dir()})")
    else:
        typer.echo(f"running: pid {record['pid']}, {record['api_url']}, stops after {record['idle_s']:.0f} s without a request")
        typer.echo(f"the Prefect UI (the flow runs of every command): {record.get('ui_url', record['api_url'].removesuffix('/api'))}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the shared local Prefect server now (the next flow command starts it again)."""
    from flows.local_server import state_dir, stop_server

    pid = stop_server(state_dir())
    typer.echo("not running" if pid is None else f"stopped (pid {pid})")
