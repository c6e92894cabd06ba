"""Errors a user can cause end in one line on stderr, `error: <file or thing>: <problem>`, exit 2.

Prefect prints a failing flow's traceback on its console handler, which writes to the real
stderr, not to CliRunner's: the cases that run a flow are checked in a real `wsss` process.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from cli.app import describe_os_error
from wsss_core.store import INGEST_STAGE, Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]
# Root ignores file modes; without these capabilities it obeys them like any user.
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def start_wsss(*args, prefix: list[str] | None = None) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO_ROOT)}
    command = [*(prefix or []), sys.executable, "-m", "cli", *map(str, args)]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> tuple[int, list[str]]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output.strip().splitlines()


def assert_one_error_line(result: tuple[int, list[str]], starts: str, ends: str = "") -> None:
    code, lines = result
    assert code == 2 and len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith(f"error: {starts}") and lines[0].endswith(ends), lines[0]


def dataset_copy(synthetic_root: Path, path: Path) -> Path:
    shutil.copytree(synthetic_root, path)
    return path


def test_wrong_datasets_and_workspaces_are_one_line_without_prefects_traceback(synthetic_root, tmp_path):
    duplicate = dataset_copy(synthetic_root, tmp_path / "duplicate")
    (duplicate / "classes.txt").write_text("background\nsquare\nsquare\n")
    empty = dataset_copy(synthetic_root, tmp_path / "empty")
    (empty / "ImageSets/Segmentation/train.txt").write_text("\n")
    other = dataset_copy(synthetic_root, tmp_path / "other")
    (other / "classes.txt").write_text("background\nthing\n")
    taken = tmp_path / "workspace"
    assert invoke("ingest", "--root", synthetic_root, "--workspace", taken, "--no-progress").exit_code == 0
    (tmp_path / "a-file").write_text("")

    def ingest(root, workspace=None, *options, debug=False):
        workspace = workspace or tmp_path / f"ws-{root.name}"
        return start_wsss(*(["--debug"] if debug else []), "ingest", "--root", root, "--workspace", workspace,
                          "--no-progress", *options)

    processes = {  # all at once: each is a whole `wsss` start
        "duplicate": ingest(duplicate),
        "empty": ingest(empty),
        "missing": ingest(synthetic_root, None, "--split", "nosuch"),
        "foreign": ingest(other, taken),
        "not a directory": ingest(synthetic_root, tmp_path / "a-file" / "ws"),
        "debug": ingest(duplicate, None, debug=True),
    }
    results = {name: finished(process) for name, process in processes.items()}
    assert_one_error_line(results["duplicate"], f"{duplicate}/classes.txt: duplicate class names: square")
    assert_one_error_line(results["empty"], f"{empty}/ImageSets/Segmentation/train.txt: split list is empty")
    assert_one_error_line(results["missing"], f"{synthetic_root}/ImageSets/Segmentation/nosuch.txt: split list not found")
    assert_one_error_line(results["foreign"], f"{taken}: workspace was made from dataset")
    assert_one_error_line(results["not a directory"], f"{tmp_path}/a-file/ws", ": not a directory")
    code, lines = results["debug"]  # --debug: the tracebacks, Prefect's and the command's
    assert code != 0 and "Traceback (most recent call last):" in lines and "duplicate class names" in lines[-1]


def test_a_class_list_that_is_a_folder_stops_ingest_and_run_in_one_line(synthetic_root, tmp_path):
    folder = dataset_copy(synthetic_root, tmp_path / "folder")
    (folder / "classes.txt").unlink()
    (folder / "classes.txt").mkdir()  # not "no classes.txt": VOC's 21 classes would fail every image
    processes = [
        start_wsss("ingest", "--root", folder, "--workspace", tmp_path / "ws-ingest", "--no-progress"),
        start_wsss("run", "--root", folder, "--workspace", tmp_path / "ws-run", "--no-mlflow"),
    ]
    for result in [finished(process) for process in processes]:
        assert_one_error_line(result, f"{folder}/classes.txt: is a directory, not a class list file")


def test_a_read_only_workspace_is_one_line(synthetic_root, tmp_path):
    workspace = tmp_path / "workspace"
    assert invoke("ingest", "--root", synthetic_root, "--workspace", workspace, "--no-progress").exit_code == 0
    prefix = None
    if os.geteuid() == 0:
        if not shutil.which("setpriv") or subprocess.run([*DROP_DAC, "true"]).returncode != 0:
            pytest.skip("running as root, and setpriv cannot drop root's right to write read-only files")
        prefix = DROP_DAC
    modes = {path: path.stat().st_mode for path in [workspace, *workspace.rglob("*")]}
    for path, mode in modes.items():  # chmod -R a-w
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        result = finished(start_wsss("ingest", "--root", synthetic_root, "--workspace", workspace, "--no-progress",
                                     prefix=prefix))
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert_one_error_line(result, f"{workspace}/", ": permission denied")


@pytest.fixture
def staged_workspace(tmp_path) -> Path:
    """An ingested image with GT and one array of each non-mask stage, written as the stages write them."""
    ws = Workspace(tmp_path / "ws")
    ws.bind_dataset({"name": "voc:toy", "format": "voc", "root": "/data/toy", "classes": ["background", "cat"]})
    ws.begin_stage(INGEST_STAGE, "k0", {})
    ws.write_array("images", "a", np.zeros((4, 6, 3), np.uint8))
    ws.write_array("gt", "a", np.zeros((4, 6), np.uint8))
    ws.mark_done(INGEST_STAGE, "a", "k0")
    arrays = {
        "superpixels": np.arange(24, dtype=np.int32).reshape(4, 6),
        "graphs": np.zeros((3, 2), np.int64),
        "cams": np.zeros((2, 4, 6), np.float32),
        "seeds/scribbles": np.zeros(5, np.int64),
    }
    for stage, array in arrays.items():
        ws.begin_stage(stage, "k1", {})
        ws.write_array(stage, "a", array)
        ws.mark_done(stage, "a", "k1")
    return ws.path


@pytest.mark.parametrize("stage", ["superpixels", "graphs", "cams", "seeds/scribbles"])
def test_export_refuses_stages_without_class_masks(staged_workspace, tmp_path, stage):
    result = invoke("export", "--workspace", staged_workspace, "--stage", stage, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == f"error: {staged_workspace}: no mask stage {stage!r} (exportable: gt, scribbles, manual)"
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_out_that_is_a_file(staged_workspace, tmp_path):
    (tmp_path / "taken.png").write_text("")
    result = invoke("export", "--workspace", staged_workspace, "--stage", "gt", "--out", tmp_path / "taken.png")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [f"error: {tmp_path}/taken.png: exists and is not a folder "
                                                  "(export writes one <image id>.png per image there)"]
    assert invoke("export", "--workspace", staged_workspace, "--stage", "gt", "--out", tmp_path / "out").exit_code == 0


def test_file_system_errors_outside_flows_are_one_line_and_debug_raises_them(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = invoke("generate", "--out", tmp_path / "a-file" / "data", "--images", 1)
    assert result.exit_code == 2 and result.output.strip() == f"error: {tmp_path}/a-file/data: not a directory"
    with pytest.raises(NotADirectoryError):
        invoke("--debug", "generate", "--out", tmp_path / "a-file" / "data", "--images", 1)


def test_os_errors_read_file_first():
    assert describe_os_error(PermissionError(13, "Permission denied", "/ws/x")) == "/ws/x: permission denied"
    assert describe_os_error(OSError(28, "No space left on device", "/ws/y")) == "/ws/y: no space left on device"
    assert describe_os_error(OSError(18, "Invalid cross-device link", "/a", None, "/b")) == "/a -> /b: invalid cross-device link"
    assert describe_os_error(BrokenPipeError(32, "Broken pipe")) == "broken pipe"


# `wsss` with a full disk under its SQLite stores: SQLite's page limit makes every write past it
# fail with SQLITE_FULL, "database or disk is full", the error a full disk gives (the same
# half-created MLflow store was seen with a real full tmpfs).
FULL_DISK = """
import sqlite3, sys
import sqlalchemy
from sqlalchemy import event

@event.listens_for(sqlalchemy.engine.Engine, "connect")
def full_disk(connection, record):
    if isinstance(connection, sqlite3.Connection):
        connection.execute("PRAGMA max_page_count = 30")

from cli import app
app(sys.argv[1:], prog_name="wsss")
"""


def test_a_full_disk_under_the_mlflow_store_is_one_line_and_the_next_run_repairs_the_store(synthetic_root, tmp_path):
    import mlflow
    from prefect.settings import PREFECT_API_URL

    workspace = tmp_path / "workspace"
    assert invoke("ingest", "--root", synthetic_root, "--workspace", workspace, "--no-progress").exit_code == 0
    command = ["graphnet", "--workspace", str(workspace), "--until", "superpixels", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO_ROOT))
    full = subprocess.run([sys.executable, "-c", FULL_DISK, *command], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert [line for line in lines if line.startswith("error:") or "| ERROR" in line] == [
        f"error: {workspace}/mlflow.db: disk full (database or disk is full); free some space and run the command again"
    ]
    # Space freed: the store that MLflow's migrations left half-made is made again, and the run works.
    freed = subprocess.run([sys.executable, "-m", "cli", *command], cwd=REPO_ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert freed.returncode == 0, freed.stderr[-3000:]
    assert "MLflow store left half-created" in freed.stderr
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("wsss").experiment_id])
    assert run.info.status == "FINISHED"
