"""A person's full mask end to end, through the CLI: drawn in the labelling tool, imported as the
image's manual mask, ingested, used by the segmentation round instead of its pseudo mask, by
`wsss export` and the review export, marked by status and the report, left out of one
evaluation column; the incremental re-run equals a clean run of the changed dataset."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from benchmarks.dataset_changes import array_differences
from cli import app
from wsss_core.manual import NO_MANUAL
from wsss_core.review import cvat
from wsss_core.store import Workspace

MASKS = "pseudo/labelprop-scribbles"
ROUND = f"{MASKS}/round-1"
TRAINING = "train-segmentation/labelprop-scribbles/round-1"


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def run_command(workspace: Path, root: Path) -> list[str]:
    """Label propagation (fast, no CNN) and one tiny segmentation round, from scratch, on one thread."""
    return ["run", "--workspace", str(workspace), "--root", str(root), "--ingest-split", "train", "--ingest-split", "val",
            "--path", "graphnet-scribbles", "--rounds", "1", "--no-mlflow", "--device", "cpu",
            "--set", "graphnet.preset=offline", "--set", "graphnet.propagation=label-propagation",
            "--set", "segmentation.preset=small", "--set", "segmentation.train_threads=1",
            "--set", "segmentation.overrides={train: {epochs: 1, crop_size: 48, batch_size: 4, weights: none}}",
            "--set", "execution.progress=false", "--set", "execution.batch_size=4"]


def test_a_drawn_mask_replaces_the_pseudo_mask_downstream_and_the_rerun_equals_a_clean_run(synthetic_root, tmp_path):
    root = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    workspace = tmp_path / "ws"
    invoke(*run_command(workspace, root))
    ws = Workspace(workspace)
    before = {stage: ws.done_stamps(stage) for stage in ("seeds/scribbles", MASKS, TRAINING, ROUND)}
    first_round = {i: ws.read_array(ROUND, i) for i in ws.image_ids()}
    scores_before = json.loads((workspace / "reports" / "evaluation-run.json").read_text())["results"]

    # the least-confident train image gets a full mask drawn in CVAT: its GT, painted class by class
    train = set(ws.split_ids("train"))
    out = tmp_path / "review"
    invoke("review", "export", "--workspace", str(workspace), "--mask-set", MASKS, "--worst", "12", "--out", str(out))
    order = [entry["id"] for entry in json.loads((out / "review.json").read_text())["images"]]
    drawn = next(i for i in order if i in train)
    gt = ws.read_array("gt", drawn)
    person = np.where(gt == 255, 0, gt).astype(np.uint8)  # a person paints every pixel; unpainted is background
    assert not np.array_equal(person, ws.read_array(MASKS, drawn))
    tree = ET.parse(out / "annotations.xml")
    [image] = [i for i in tree.getroot().findall("image") if i.get("name") == f"images/{drawn}.png"]
    for label in np.unique(person):
        rle, left, top, width, height = cvat.encode_mask(person == label)
        ET.SubElement(image, "mask", {"label": ws.classes[label], "rle": rle, "left": str(left), "top": str(top),
                                      "width": str(width), "height": str(height)})
    tree.write(tmp_path / "from-cvat.xml")
    line = invoke("review", "import", "--workspace", str(workspace), "--root", str(root), "--from", str(tmp_path / "from-cvat.xml"))
    assert f"({drawn}: mask)" in line
    assert np.array_equal(np.array(Image.open(root / "SegmentationClassManual" / f"{drawn}.png")), person)

    # the re-run: ingest notices the new file; the round trains again and predicts again, the method's masks stay
    again = invoke(*run_command(workspace, root))
    assert "1 changed, 0 new, 0 removed" in again
    after = {stage: ws.done_stamps(stage) for stage in before}
    assert after["seeds/scribbles"] == before["seeds/scribbles"] and after[MASKS] == before[MASKS]
    assert after[TRAINING] != before[TRAINING] and after[ROUND] != before[ROUND]
    assert np.array_equal(ws.read_array("manual", drawn), person)

    # a clean run of the changed dataset gives the same arrays, every stage and image
    clean = tmp_path / "clean"
    invoke(*run_command(clean, root))
    assert array_differences(ws, Workspace(clean), ws.image_ids()) == []

    # export: the manual mask in place of the pseudo mask (--no-manual: the method's own)
    invoke("export", "--workspace", str(workspace), "--stage", MASKS, "--out", str(tmp_path / "used"))
    assert np.array_equal(np.array(Image.open(tmp_path / "used" / f"{drawn}.png")), person)
    invoke("export", "--workspace", str(workspace), "--stage", MASKS, "--out", str(tmp_path / "own"), "--no-manual")
    assert np.array_equal(np.array(Image.open(tmp_path / "own" / f"{drawn}.png")), ws.read_array(MASKS, drawn))

    # the review export: the person's mask (role manual) instead of a pseudo mask; --worst passes over it
    invoke("review", "export", "--workspace", str(workspace), "--mask-set", MASKS, "--ids", drawn, "--out", str(tmp_path / "r2"))
    roles = {a.text for a in ET.parse(tmp_path / "r2" / "annotations.xml").getroot().iter("attribute") if a.get("name") == "role"}
    assert "manual" in roles and "pseudo" not in roles
    invoke("review", "export", "--workspace", str(workspace), "--mask-set", MASKS, "--worst", "12", "--out", str(tmp_path / "r3"))
    assert drawn not in [e["id"] for e in json.loads((tmp_path / "r3" / "review.json").read_text())["images"]]

    # evaluation: the method's masks scored as before over every image, and a column without the drawn image
    results = json.loads((workspace / "reports" / "evaluation-run.json").read_text())["results"]
    assert results[MASKS]["miou"] == scores_before[MASKS]["miou"]
    assert results[MASKS]["splits"][NO_MANUAL]["images"] == results[MASKS]["images"] - 1
    assert NO_MANUAL not in scores_before[MASKS]["splits"]

    # status and the report mark it
    assert f"manual masks: 1 image ({drawn})" in invoke("status", "--workspace", str(workspace))
    invoke("report", "--workspace", str(workspace), "--out", str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert f"1: {drawn} (a person" in page and f"mIoU {NO_MANUAL}" in page

    # the manual mask removed: the image is back on its pseudo mask, the round as the first clean run had it
    (root / "SegmentationClassManual" / f"{drawn}.png").unlink()
    assert "1 changed, 0 new, 0 removed" in invoke(*run_command(workspace, root))
    assert not ws.has_array("manual", drawn)
    assert all(np.array_equal(ws.read_array(ROUND, i), first_round[i]) for i in ws.image_ids())
