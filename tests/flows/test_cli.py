"""The `wsss` command as a user runs it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cli import app
from wsss_core.data.image_io import save_palette_png
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset
from wsss_core.store import Workspace
from wsss_core.graphnet.config import resolve_config
from wsss_core.graphnet.superpixels import compute_superpixels

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_every_command_has_help():
    for command in ["generate", "ingest", "superpixels", "status", "check", "export", "demo", "retry-failed", "compare", "ui", "report"]:
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, command


def write_custom_voc(root: Path) -> dict[str, np.ndarray]:
    """A 3-image VOC-layout dataset with its own classes, XML boxes and scribble PNGs."""
    rng = np.random.default_rng(7)
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "classes.txt").write_text("background\nkettle\nmug\n")
    masks = {}
    for index in range(3):
        image_id = f"img{index}"
        mask = np.zeros((30, 40), np.uint8)
        mask[5:20, 4 + index : 18 + index] = 1
        mask[10:28, 22:38] = 2
        mask[4, 4:18] = 255  # void line
        masks[image_id] = mask
        image = (rng.random((30, 40, 3)) * 60 + mask[..., None] * 60).astype(np.uint8)
        (root / "JPEGImages").mkdir(exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg")
        save_palette_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        scribble = np.full_like(mask, 255)
        scribble[12, 8:14] = 1
        scribble[20, 25:35] = 2
        scribble[1, 1:30] = 0
        save_palette_png(root / "scribbles" / f"{image_id}.png", scribble)
        (root / "Annotations").mkdir(exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>40</width><height>30</height>"
            "<depth>3</depth></size>"
            f"<object><name>kettle</name><bndbox><xmin>{5 + index}</xmin><ymin>6</ymin><xmax>{18 + index}</xmax>"
            "<ymax>20</ymax></bndbox></object>"
            "<object><name>mug</name><bndbox><xmin>23</xmin><ymin>11</ymin><xmax>38</xmax><ymax>28</ymax>"
            "</bndbox></object></annotation>"
        )
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(masks) + "\n")
    return masks


def test_custom_voc_dataset_round_trips_through_export(tmp_path):
    masks = write_custom_voc(tmp_path / "voc")
    workspace = tmp_path / "ws"
    result = invoke("ingest", "--root", tmp_path / "voc", "--workspace", workspace, "--no-progress")
    assert result.exit_code == 0, result.output
    ws = Workspace(workspace)
    assert ws.classes == ["background", "kettle", "mug"]
    assert ws.read_array("boxes", "img1").tolist() == [[1, 5, 5, 19, 20], [2, 22, 10, 38, 28]]
    assert ws.read_array("tags", "img1").tolist() == [1, 2]
    out = tmp_path / "exported"
    result = invoke("export", "--workspace", workspace, "--stage", "gt", "--out", out)
    assert result.exit_code == 0, result.output
    for image_id, mask in masks.items():
        exported = Image.open(out / f"{image_id}.png")
        assert exported.mode == "P"
        assert np.array_equal(np.asarray(exported), mask)
    scribbles = invoke("export", "--workspace", workspace, "--stage", "scribbles", "--out", tmp_path / "s")
    assert scribbles.exit_code == 0 and len(list((tmp_path / "s").glob("*.png"))) == 3


def test_exit_status_and_status_report_on_bad_input(tmp_path):
    masks = write_custom_voc(tmp_path / "voc")
    bad = tmp_path / "voc/scribbles/img2.png"
    save_palette_png(bad, np.full((30, 40), 7, np.uint8))  # class 7 of 3
    workspace = tmp_path / "ws"
    result = invoke("ingest", "--root", tmp_path / "voc", "--workspace", workspace, "--no-progress")
    assert result.exit_code == 1
    assert "img2" in result.output and "2 computed" in result.output
    status = invoke("status", "--workspace", workspace)
    assert status.exit_code == 0
    assert "img2" in status.output and "img2.png" in status.output
    assert len(masks) == 3
    refused = invoke("export", "--workspace", workspace, "--stage", "superpixels", "--out", tmp_path / "x")
    assert refused.exit_code == 2 and "no mask stage 'superpixels'" in refused.output
    missing = invoke("ingest", "--root", tmp_path / "nowhere", "--workspace", tmp_path / "ws2")
    assert missing.exit_code == 2 and "nowhere" in missing.output


def test_killed_superpixels_run_resumes_without_redoing_finished_images(tmp_path):
    from prefect.settings import PREFECT_API_URL

    root = generate_dataset(tmp_path / "data", SyntheticConfig(n_images=40, width=192, height=144, seed=11))
    workspace = tmp_path / "ws"
    assert invoke("ingest", "--root", root, "--workspace", workspace, "--no-progress").exit_code == 0
    ws = Workspace(workspace)
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": repo}  # the test harness's server
    command = [sys.executable, "-m", "cli", "superpixels", "--workspace", str(workspace),
               "--batch-size", "1", "--workers", "1", "--no-progress"]
    process = subprocess.Popen(command, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not ws.done_ids("superpixels") and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = ws.done_ids("superpixels")
    total = len(ws.image_ids())
    assert 0 < len(finished) < total, "the run should have been killed halfway"
    key = ws.stage_key("superpixels")
    marker_times = {i: (ws.path / "markers/superpixels" / key / f"{i}.json").stat().st_mtime_ns for i in finished}

    result = invoke("superpixels", "--workspace", workspace, "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"{total - len(finished)} computed, {len(finished)} already done" in result.output
    assert ws.done_ids("superpixels") == set(ws.image_ids())
    for image_id, mtime in marker_times.items():  # finished images were not redone
        assert (ws.path / "markers/superpixels" / key / f"{image_id}.json").stat().st_mtime_ns == mtime
    for image_id in ws.image_ids():  # and every stored array is whole
        expected = compute_superpixels(ws.read_array("images", image_id), resolve_config("auto").config.superpixels)
        assert np.array_equal(ws.read_array("superpixels", image_id), expected), image_id
