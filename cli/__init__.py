"""The `wsss` command line: parse options, call a flow, print what it did. It decides nothing.

Presets, weights fallbacks and engines are resolved inside the flows, so a Prefect
deployment or a Dask worker runs exactly what a command runs. Heavy libraries (torch,
prefect, mlflow) are imported only by the command that needs them: `wsss --help` and
`wsss status` start fast. Nothing here imports Prefect but through a flow.

    app.py        the `wsss` group: one-line errors, the common options, call_flow, finish
    data.py       generate, ingest, export
    workspace.py  status, check, gc (their printing: status.py, check.py)
    paths.py      superpixels, graphnet, affinitynet, segment, evaluate
    run.py        run, retry-failed, demo
    results.py    compare, report, ui
    review.py     review export, review import
    server.py     server status, server stop (the shared local Prefect server)
    stack.py      stack up, stack status, stack down (PostgreSQL, Prefect, MLflow, Dask on 127.0.0.1)
"""

from cli import data, paths, results, review, run, server, stack, workspace
from cli.app import app

# The commands, in the order `wsss --help` lists them.
for _command in (
    data.generate, data.ingest, paths.superpixels, workspace.status, workspace.check, workspace.gc, data.export,
    paths.evaluate, paths.graphnet, paths.affinitynet, paths.segment, run.run,
):
    app.command()(_command)
app.command("retry-failed")(run.retry_failed)
for _command in (results.compare, results.report, results.ui, run.demo):
    app.command()(_command)
app.add_typer(review.review_app, name="review")
app.add_typer(server.server_app, name="server")
app.add_typer(stack.stack_app, name="stack")

__all__ = ["app"]
