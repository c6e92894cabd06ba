"""A workspace given as a URL: file:// is a local path, object-store URLs are refused in one line."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
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
