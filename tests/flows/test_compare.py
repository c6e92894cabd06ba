"""`wsss compare` and `wsss ui` on real tracking stores written by the flows."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from flows.common import Execution
from flows.evaluate import evaluate_flow
from flows.ingest import ingest_flow
from wsss_core.store import Workspace
from wsss_core.tracking import Tracking, open_run

REPO_ROOT = Path(__file__).resolve().parents[2]
QUIET = Execution(progress=False)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@pytest.fixture
def no_shared_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def test_compare_across_workspaces_shows_exactly_the_setting_that_differs(synthetic_root, tmp_path, no_shared_store):
    """Two GraphNet runs, each in its own workspace and store, that differ in one setting."""
    workspaces = []
    for epochs in (40, 10):
        workspace = tmp_path / f"ws-{epochs}"
        ingest_flow(root=str(synthetic_root), workspace=str(workspace), execution=QUIET)
        result = invoke("graphnet", "--workspace", workspace, "--preset", "offline", "--set", f"gcn.pretrain_epochs={epochs}",
                        "--no-progress")
        assert result.exit_code == 0, result.output
        workspaces.append(workspace)
    result = invoke("compare", "--workspace", workspaces[0], "--workspace", workspaces[1],
                    "--filter", "params.method = 'gcn-scribbles'")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.strip().splitlines()
    assert columns(header) == ["miou", "run", "run id", "started", "workspace", "gcn.pretrain_epochs"]
    assert len(rows) == 2 and all(columns(row)[1] == "pseudo/gcn-scribbles train" for row in rows)
    values = [float(columns(row)[0]) for row in rows]
    assert values == sorted(values, reverse=True)  # best first
    assert {columns(row)[-1] for row in rows} == {"40", "10"}
    assert {columns(row)[4] for row in rows} == {str(w.resolve()) for w in workspaces}

    # the filter runs on readable params; a filter MLflow cannot parse is one line, exit 2
    result = invoke("compare", "--workspace", workspaces[0], "--filter", "params.propagation = 'gcn' and params.split = 'train'")
    assert result.exit_code == 0 and len(result.stdout.strip().splitlines()) == 2  # the baseline has no propagation
    result = invoke("compare", "--workspace", workspaces[0], "--filter", "params.method == gcn")
    assert result.exit_code == 2 and result.stderr.startswith("error: --filter 'params.method == gcn': ")
    assert len(result.stderr.strip().splitlines()) == 1


def perfect_and_empty_masks(workspace: Path, background_only: bool) -> None:
    """A hand-made mask stage: the GT itself, or background everywhere."""
    ws = Workspace(workspace)
    ws.begin_stage("pseudo/nearest-scribbles", "k", {})
    ws.note_stage("pseudo/nearest-scribbles", settings={"background_only": background_only})
    for image_id in ws.image_ids():
        gt = ws.read_array("gt", image_id)
        mask = np.zeros_like(gt) if background_only else np.where(gt == 255, 0, gt)
        ws.write_array("pseudo/nearest-scribbles", image_id, mask.astype(np.uint8))
        ws.mark_done("pseudo/nearest-scribbles", image_id, "k")


def evaluate_two_workspaces(synthetic_root, tmp_path) -> list:
    """Two workspaces (perfect masks, background-only masks) evaluated into the store
    MLFLOW_TRACKING_URI names: neither writes a store of its own."""
    workspaces = []
    for background_only in (False, True):
        workspace = tmp_path / f"ws-{background_only}"
        ingest_flow(root=str(synthetic_root), workspace=str(workspace), execution=QUIET)
        perfect_and_empty_masks(workspace, background_only)
        evaluate_flow(str(workspace), ["pseudo/nearest-scribbles"])
        assert not (workspace / "mlflow.db").exists()
        workspaces.append(workspace)
    return workspaces


def test_compare_reads_a_tracking_store_shared_by_workspaces(synthetic_root, tmp_path, monkeypatch):
    shared = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared)
    evaluate_two_workspaces(synthetic_root, tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    result = invoke("compare", "--tracking-uri", shared)
    header, *rows = result.stdout.strip().splitlines()
    assert columns(header)[-2:] == ["workspace", "background_only"]
    assert [columns(row)[0] for row in rows][0] == "100.00" and [columns(row)[-1] for row in rows] == ["false", "true"]
    assert (tmp_path / "shared" / "mlartifacts").is_dir()  # artifacts beside the shared store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ui_serves_the_workspace_store_on_the_loopback_interface(tmp_path, no_shared_store):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with open_run(Tracking.for_workspace(workspace), "graphnet brave-run", {"preset": "offline"}) as tracked:
        tracked.log_metrics({"miou": 91.5})
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "cli", "ui", "--workspace", str(workspace), "--port", str(port)],
                                  cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", method="POST",
            data=json.dumps({"experiment_ids": ["1"]}).encode(), headers={"Content-Type": "application/json"},
        )
        deadline, found = time.monotonic() + 180, None
        while found is None:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    found = json.loads(response.read())
            except OSError:
                time.sleep(1)
        assert [run["info"]["run_name"] for run in found["runs"]] == ["graphnet brave-run"]
        assert f"http://127.0.0.1:{port}" in log.read_text()
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert listening and all("127.0.0.1:" in line for line in listening.splitlines()), listening
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, log.read_text()


def test_ui_refuses_a_workspace_without_a_store_and_a_taken_port(tmp_path, no_shared_store):
    result = invoke("ui", "--workspace", tmp_path)
    assert result.exit_code == 2 and "no MLflow store" in result.stderr
    (tmp_path / "mlflow.db").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = invoke("ui", "--workspace", tmp_path, "--port", taken.getsockname()[1])
    assert result.exit_code == 2 and "already in use" in result.stderr


def test_with_a_shared_store_compare_and_report_read_the_workspaces_own_runs_there(synthetic_root, tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI (a server, `wsss stack up`): runs go there, no workspace store is
    written, and `--workspace` / the report read that workspace's runs from it, not the others'."""
    from wsss_core.report import mlflow_runs

    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared)
    workspaces = evaluate_two_workspaces(synthetic_root, tmp_path)
    result = invoke("compare", "--workspace", workspaces[1], "--filter", "params.split = 'train'")
    assert result.exit_code == 0, result.output
    rows = result.stdout.strip().splitlines()[1:]
    assert rows and {float(columns(row)[0]) for row in rows} != {100.0}  # only the background-only workspace's
    assert all("100.00" not in row for row in rows)
    runs, note = mlflow_runs(Workspace(workspaces[0]))
    assert runs and shared in note, note
    assert {run["miou"] for run in runs if run["miou"]} == {"100.0"}
