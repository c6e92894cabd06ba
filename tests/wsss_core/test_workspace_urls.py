"""A workspace given as a URL: file:// is a local path, object-store URLs are refused in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from wsss_core.errors import WorkspaceError
from wsss_core.store import Workspace, workspace_path


def test_local_paths_and_file_urls_are_directories(tmp_path):
    assert workspace_path(tmp_path / "ws") == tmp_path / "ws"
    assert workspace_path("relative/ws") == Path("relative/ws")
    assert Workspace(f"file://{tmp_path}/ws").path == tmp_path / "ws"


@pytest.mark.parametrize("url", ["s3://bucket/ws", "gs://bucket/runs/ws", "memory://ws", Path("s3://bucket/ws")])
def test_object_store_urls_are_refused_naming_the_url_and_why(url):
    with pytest.raises(WorkspaceError) as refused:
        Workspace(url)
    message = str(refused.value)
    shown = str(url).replace(":/", "://", 1) if isinstance(url, Path) else url  # pathlib collapses "//"
    assert message.startswith(f"{shown}: object-storage workspaces are not supported yet")
    assert "markers" in message and "MLflow" in message and "checkpoints" in message


@pytest.mark.parametrize("command", [["status"], ["export", "--stage", "gt", "--out", "masks"], ["compare"]])
def test_commands_refuse_an_object_store_workspace_in_one_line(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, "--workspace", "s3://bucket/ws"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: s3://bucket/ws: object-storage workspaces")
    assert not (tmp_path / "s3:").exists()  # nothing made locally under a look-alike path


def test_a_flow_command_refuses_an_object_store_workspace_before_starting_prefect(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PYTHONPATH": str(repo), "PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_HOME": str(tmp_path / "prefect")}
    command = [sys.executable, "-m", "cli", "ingest", "--root", str(tmp_path), "--workspace", "gs://bucket/ws"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: gs://bucket/ws: object-storage workspaces are not supported yet")
    assert "temporary server" not in result.stderr.lower()  # Prefect would announce one at INFO
