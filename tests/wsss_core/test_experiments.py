import pytest

from wsss_core.errors import UsageError, WorkspaceError
from wsss_core.experiments import (
    ComparedRun,
    Store,
    differing_params,
    format_comparison,
    rank,
    search_store,
    stores_to_read,
    ui_command,
)
from wsss_core.tracking import Tracking, open_run, workspace_store


def run(name, value, started=0.0, **params):
    return ComparedRun(f"{name}-id-0123456789", name, started, "ws", value, {k: str(v) for k, v in params.items()})


def test_only_the_params_that_differ_are_shown():
    runs = [
        run("a", 90.0, method="gcn", epochs=100, split="val"),
        run("b", 80.0, method="gcn", epochs=50, split="val"),
        run("c", 85.0, method="gcn", epochs=100, split="val", crf="true"),  # a param only one run has
        run("d", 30.0, method="nearest", split="val"),  # a baseline: none of the GCN's settings
    ]
    assert differing_params(runs) == ["epochs", "method"]
    assert differing_params(runs[:1]) == []


def test_best_first_ties_newest_first_and_ascending_for_losses():
    runs = [run("old", 80.0, started=1.0), run("best", 90.0), run("new", 80.0, started=2.0)]
    assert [r.name for r in rank(runs)] == ["best", "new", "old"]
    assert [r.name for r in rank(runs, ascending=True)] == ["new", "old", "best"]


def test_table_has_the_metric_the_run_and_the_differing_params():
    lines = format_comparison([run("a", 91.234, epochs=100), run("b", 8.5)], "miou", ["epochs"], show_where=False).splitlines()
    assert lines[0].split() == ["miou", "run", "run", "id", "started", "epochs"]
    assert lines[1].split()[:3] == ["91.23", "a", "a-id-012"] and lines[1].split()[-1] == "100"
    assert lines[2].split()[0] == "8.50" and lines[2].split()[-1] == "-"


def test_a_bad_filter_and_a_workspace_without_a_store_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with open_run(Tracking.for_workspace(tmp_path), "r", {"method": "gcn"}) as tracked:
        tracked.log_metrics({"miou": 50.0})
    store = Store(workspace_store(tmp_path), str(tmp_path))
    assert [r.name for r in search_store(store, "wsss", "miou", "params.method = 'gcn'")] == ["r"]
    assert search_store(store, "wsss", "loss") == [] and search_store(store, "other", "miou") == []
    with pytest.raises(UsageError, match="--filter 'params.method = gcn'"):
        search_store(store, "wsss", "miou", "params.method = gcn")
    with pytest.raises(WorkspaceError, match="no MLflow store"):
        stores_to_read([tmp_path / "empty"], None)
    with pytest.raises(UsageError, match="--workspace"):
        stores_to_read([], None)


def test_the_ui_listens_on_the_loopback_interface_only(tmp_path):
    command = ui_command(tmp_path, 5123)
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "5123"
    assert command[command.index("--backend-store-uri") + 1] == workspace_store(tmp_path)
