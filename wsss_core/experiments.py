"""Reading the tracked runs back: `wsss compare` (which setting won) and `wsss ui` (MLflow's UI
on a workspace's store). No flow runs here, so neither starts Prefect.

compare reads one tracking store (a shared URI) or several workspaces' stores together,
keeps the runs that have the metric, sorts them best first and shows only the params whose
values differ between them: the settings that explain the ranking ("-": a run without it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from wsss_core.errors import UsageError, WorkspaceError
from wsss_core.metrics import align_columns
from wsss_core.store import workspace_path
from wsss_core.tracking import workspace_store

MISSING = "-"  # a param a run does not have
DEFAULT_UI_PORT = 5000
PAGE = 1000  # runs per search request


@dataclass(frozen=True)
class Store:
    """A tracking store to read: its URI and how the table names it (a workspace, or the URI)."""

    uri: str
    label: str
    workspace: str | None = None  # only the runs tagged with this workspace (a store several share)


@dataclass
class ComparedRun:
    run_id: str
    name: str
    started: float  # seconds since the epoch
    where: str  # the workspace (its tag) or the store's label
    value: float
    params: dict[str, str] = field(default_factory=dict)


def stores_to_read(workspaces: Sequence[str | Path], tracking_uri: str | None) -> list[Store]:
    """The stores of --tracking-uri and of each --workspace (neither: MLFLOW_TRACKING_URI); a
    workspace without one is an error."""
    if not tracking_uri and not workspaces:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    stores = [Store(tracking_uri, tracking_uri)] if tracking_uri else []
    shared = os.environ.get("MLFLOW_TRACKING_URI")
    for workspace in workspaces:
        path = workspace_path(workspace)  # an object-store URL: refused
        if shared and shared != tracking_uri:  # where its runs went: the shared store, tagged with the workspace
            stores.append(Store(shared, str(path), workspace=str(path)))
        if (path / "mlflow.db").is_file():
            stores.append(Store(workspace_store(path), str(path)))
        elif not shared:
            raise WorkspaceError(f"{path / 'mlflow.db'}: no MLflow store (run a training or an evaluation with MLflow on first)")
    if not stores:
        raise UsageError("compare: give --workspace WS (repeatable) or --tracking-uri URI")
    return stores


def search_store(store: Store, experiment: str, metric: str, filter_string: str = "") -> list[ComparedRun]:
    """The runs of the experiment in one store that match the filter and have the metric
    ([] when the store has no such experiment). A filter MLflow cannot parse is a UsageError."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=store.uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except MlflowException as error:
        raise UsageError(f"{store.label}: cannot read the tracking store ({first_line(error)})") from None
    if found is None:
        return []
    runs, token = [], None
    if store.workspace is not None:
        mine = f"tags.workspace = '{store.workspace}'"
        filter_string = f"{mine} and {filter_string}" if filter_string else mine  # MLflow filters are ANDs only
    while True:
        try:
            page = client.search_runs([found.experiment_id], filter_string, max_results=PAGE, page_token=token)
        except MlflowException as error:
            raise UsageError(f"--filter {filter_string!r}: {first_line(error)}") from None
        runs.extend(page)
        token = page.token
        if not token:
            break
    return [
        ComparedRun(
            run.info.run_id, run.info.run_name or run.info.run_id, run.info.start_time / 1000,
            run.data.tags.get("workspace", store.label), run.data.metrics[metric], dict(run.data.params),
        )
        for run in runs
        if metric in run.data.metrics
    ]


def first_line(error: Exception) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def rank(runs: list[ComparedRun], ascending: bool = False) -> list[ComparedRun]:
    """Best first: highest metric (lowest with ascending, e.g. a loss); ties by newest."""
    return sorted(runs, key=lambda r: (r.value if ascending else -r.value, -r.started))


def differing_params(runs: Sequence[ComparedRun]) -> list[str]:
    """The param names with more than one value among the runs that have them.

    A param only some runs have (the GCN's settings, next to a baseline's run) is no
    difference by itself: what sets those runs apart (method, propagation) differs already.
    """
    names = sorted({name for run in runs for name in run.params})
    return [name for name in names if len({run.params[name] for run in runs if name in run.params}) > 1]


def format_comparison(runs: Sequence[ComparedRun], metric: str, params: Sequence[str], show_where: bool) -> str:
    """Plain-text table: metric, run name, start time, [workspace], then each differing param."""
    header = [metric, "run", "run id", "started", *(["workspace"] if show_where else []), *params]
    rows = [header]
    for run in runs:
        started = datetime.fromtimestamp(run.started).strftime("%Y-%m-%d %H:%M")
        where = [run.where] if show_where else []
        rows.append([f"{run.value:.2f}", run.name, run.run_id[:8], started, *where, *(run.params.get(p, MISSING) for p in params)])
    return align_columns(rows, right={0})


def compare_runs(
    workspaces: Sequence[str | Path],
    tracking_uri: str | None,
    experiment: str,
    metric: str,
    filter_string: str = "",
    ascending: bool = False,
    limit: int | None = None,
) -> str:
    """The comparison table of every store's matching runs that have the metric (see the module
    docstring); a line saying so when no run matches."""
    stores = stores_to_read(workspaces, tracking_uri)
    runs = rank([run for store in stores for run in search_store(store, experiment, metric, filter_string)], ascending)
    if not runs:
        where = ", ".join(store.label for store in stores)
        return f"no run of experiment {experiment!r} with metric {metric!r}" + (f" matching {filter_string!r}" if filter_string else "") + f" in {where}"
    shown = runs[:limit] if limit else runs
    params = differing_params(shown)
    table = format_comparison(shown, metric, params, show_where=len({run.where for run in runs}) > 1)
    more = f"\n({len(runs) - len(shown)} more runs not shown)" if len(shown) < len(runs) else ""
    return table + more


# ----------------------------------------------------------------------------- the UI


def ui_command(workspace: str | Path, port: int = DEFAULT_UI_PORT) -> list[str]:
    """`mlflow server` on the workspace's store, bound to 127.0.0.1 only, one worker; artifacts
    of new experiments land in the workspace's mlartifacts like those the pipeline logs."""
    path = Path(workspace).resolve()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", workspace_store(path),
        "--artifacts-destination", (path / "mlartifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def ui_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def check_ui_request(workspace: str | Path, port: int) -> None:
    """Refuse, in one line, a workspace without a tracking store or a port already taken."""
    store = workspace_path(workspace) / "mlflow.db"
    if not store.is_file():
        raise WorkspaceError(f"{store}: no MLflow store (run a training or an evaluation with MLflow on first)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"port {port}: already in use on 127.0.0.1 (pick another with --port)") from None


def serve_ui(workspace: str | Path, port: int, say: Callable[[str], None]) -> int:
    """Run MLflow's UI on the workspace's store in the foreground until Ctrl-C; returns its exit code."""
    check_ui_request(workspace, port)
    say(f"MLflow UI of {workspace} at {ui_url(port)} (Ctrl-C stops it)")
    server = subprocess.Popen(ui_command(workspace, port), env=ui_environment())
    try:
        return server.wait()
    except KeyboardInterrupt:  # the server got the same Ctrl-C (one process group): let it finish
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait()
        return 0  # stopped as asked


def ui_environment() -> dict[str, str]:
    """The server's environment: without MLflow's job runner (background worker processes for
    its GenAI jobs; browsing runs needs none), unless the user asked for it."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
