import numpy as np

from wsss_core.check import check_workspace
from wsss_core.store import INGEST_STAGE, Workspace

DATASET = {"name": "voc:toy", "format": "voc", "root": "/data/toy", "classes": ["background", "cat"], "split": "train"}


def small_workspace(tmp_path) -> Workspace:
    """Three ingested images, superpixels, a nested per-image stage and a dataset-level one."""
    ws = Workspace(tmp_path / "ws")
    ws.bind_dataset(DATASET)
    ws.begin_stage(INGEST_STAGE, "k0", {})
    ws.begin_stage("superpixels", "k1", {})
    ws.begin_stage("graphs", "k2", {})
    ws.begin_stage("train-cam", "k3", {})
    for image_id in ("a", "b", "c"):
        ws.write_array("images", image_id, np.full((4, 5, 3), 7, np.uint8))
        ws.write_array("boxes", image_id, np.zeros((0, 5), np.int32))
        ws.write_array("tags", image_id, np.array([1], np.int32))
        ws.mark_done(INGEST_STAGE, image_id, "k0")
        ws.write_array("superpixels", image_id, np.arange(20, dtype=np.int32).reshape(4, 5))
        ws.mark_done("superpixels", image_id, "k1")
        ws.write_array("graphs", image_id, np.array([[0, 1]], np.int64), name="edges")
        ws.write_array("graphs", image_id, np.ones((2, 3), np.float32), name="nodes")
        ws.mark_done("graphs", image_id, "k2")
        ws.mark_done("train-cam", image_id, "k3")  # a training: no per-image arrays
    return ws


def chunk(ws: Workspace, array_path: str):
    return next(p for p in (ws.store_path / array_path / "c").rglob("*") if p.is_file())


def test_a_sound_workspace_is_read_back_whole(tmp_path):
    ws = small_workspace(tmp_path)
    seen = []
    report = check_workspace(ws, on_image=lambda stage, image_id: seen.append((stage, image_id)))
    assert report.problems == []
    assert report.checked == {"graphs": 3, "ingest": 3, "superpixels": 3}
    assert report.arrays == 3 * (3 + 1 + 2)
    assert len(seen) == 9


def test_broken_arrays_and_missing_ones_are_repaired_in_their_own_stage(tmp_path):
    ws = small_workspace(tmp_path)
    broken_image = chunk(ws, "images/a")
    broken_image.write_bytes(broken_image.read_bytes()[:5])
    broken_edges = chunk(ws, "graphs/b/edges")
    broken_edges.write_bytes(b"")
    import shutil

    shutil.rmtree(ws.store_path / "superpixels/c")
    report = check_workspace(ws)
    found = {(p.stage, p.image_id): p for p in report.problems}
    assert set(found) == {(INGEST_STAGE, "a"), ("graphs", "b"), ("superpixels", "c")}
    assert found[INGEST_STAGE, "a"].path == str(broken_image)
    assert found["graphs", "b"].path == str(broken_edges)
    assert "no array stored" in found["superpixels", "c"].error
    assert report.repaired == {INGEST_STAGE: 1, "graphs": 1, "superpixels": 1}
    assert ws.image_ids() == ["b", "c"]
    assert ws.done_ids("graphs") == {"a", "c"} and ws.done_ids("superpixels") == {"a", "b"}
    for stage, image_id in found:
        [record] = ws.failures(stage)
        assert (record.image_id, record.kind) == (image_id, "unreadable")
        assert found[stage, image_id].path in record.message
    again = check_workspace(ws)
    assert again.problems == [] and again.checked == {"graphs": 2, "ingest": 2, "superpixels": 2}


HALF_CREATE = """
import sqlite3, sys
import mlflow, sqlalchemy
from sqlalchemy import event

@event.listens_for(sqlalchemy.engine.Engine, "connect")
def full_disk(connection, record):
    if isinstance(connection, sqlite3.Connection):
        connection.execute("PRAGMA max_page_count = 30")

mlflow.MlflowClient(tracking_uri=sys.argv[1]).search_experiments()
"""


def half_create_store(uri: str) -> None:
    """Create a SQLite MLflow store under SQLite's page limit, in a process of its own (MLflow keeps
    its engines): the migrations stop half-way with "database or disk is full", as on a full disk
    (tests/flows/test_cli_errors.py)."""
    import subprocess
    import sys

    made = subprocess.run([sys.executable, "-c", HALF_CREATE, uri], capture_output=True, text=True, timeout=120)
    assert made.returncode != 0 and "database or disk is full" in made.stderr, made.stderr[-2000:]


def test_a_half_created_mlflow_store_is_reported_and_created_again(tmp_path):
    import mlflow
    from typer.testing import CliRunner

    from cli import app
    from wsss_core.tracking import half_created, workspace_store

    ws = small_workspace(tmp_path)
    uri = workspace_store(ws.path)
    assert check_workspace(ws).tracking_store is None  # no store: nothing to say
    half_create_store(uri)
    assert half_created(uri)
    checked = CliRunner().invoke(app, ["check", "--workspace", str(ws.path), "--no-progress"])
    assert checked.exit_code == 1, checked.output
    assert f"{ws.path / 'mlflow.db'}: MLflow store left half-created (no run in it): created again" in " ".join(checked.output.split())
    assert not half_created(uri)
    mlflow.MlflowClient(tracking_uri=uri).create_experiment("after-the-check")  # the store works again
    assert check_workspace(ws).tracking_store is None
