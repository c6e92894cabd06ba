"""The review loop end to end, through the CLI: export the least-confident images, edit the file as
the labelling tool would, import it, run again: exactly the edited images are recomputed."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from benchmarks.dataset_changes import read_split
from cli import app
from wsss_core.confidence import read_confidence, worst
from wsss_core.store import Workspace

MASKS = "pseudo/labelprop-scribbles"


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def unlabelled_run(gt: np.ndarray, scribble: np.ndarray) -> tuple[int, int, int, int]:
    """(class, row, x0, x1): six pixels in a row of one GT class that no stroke touches (nor the rows
    beside them): where a reviewer adds a corrective stroke."""
    for row in range(2, gt.shape[0] - 2):
        free = (scribble[row - 1 : row + 2] == 255).all(axis=0)
        for label in np.unique(gt[row]):
            cols = np.flatnonzero((gt[row] == label) & free)
            if label != 255 and len(cols) >= 6 and cols[5] - cols[0] == 5:
                return int(label), row, int(cols[0]), int(cols[0]) + 5
    raise AssertionError("no room for a stroke")


def test_export_worst_edit_import_rerun_recomputes_only_the_edited_images(synthetic_root, tmp_path):
    root = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    workspace = str(tmp_path / "ws")
    run = ["run", "--workspace", workspace, "--root", str(root), "--path", "graphnet-scribbles", "--rounds", "0",
           "--no-evaluate", "--no-mlflow", "--set", "graphnet.preset=offline",
           "--set", "graphnet.propagation=label-propagation", "--set", "execution.progress=false"]
    invoke(*run)
    ws = Workspace(workspace)
    ids = read_split(root, "train")
    stages = ("superpixels", "seeds/scribbles", MASKS)

    # export the two least confident, as `wsss status --worst 2` lists them
    out = tmp_path / "review"
    line = invoke("review", "export", "--workspace", workspace, "--mask-set", MASKS, "--worst", "2", "--out", str(out))
    expected = worst(read_confidence(ws, MASKS), 2)
    assert json.loads((out / "review.json").read_text())["images"][0]["id"] == expected[0][0]
    assert f"review export: 2 images of {MASKS}, confidence {expected[0][1]:.2f}..{expected[1][1]:.2f}" in line
    status = invoke("status", "--workspace", workspace, "--worst", "2")
    assert f"lowest: {expected[0][0]} {expected[0][1]:.2f}, {expected[1][0]} {expected[1][1]:.2f}" in status

    # the reviewer draws one corrective stroke (a polyline) on the worst image, leaves the other as it is
    first = expected[0][0]
    label, row, x0, x1 = unlabelled_run(ws.read_array("gt", first), ws.read_array("scribbles", first))
    tree = ET.parse(out / "annotations.xml")
    [image] = [i for i in tree.getroot().findall("image") if i.get("name") == f"images/{first}.png"]
    ET.SubElement(image, "polyline", {"label": ws.classes[label], "source": "manual", "occluded": "0",
                                      "points": f"{x0}.00,{row}.00;{x1}.00,{row}.00", "z_order": "3"})
    tree.write(tmp_path / "from-cvat.xml", encoding="utf-8", xml_declaration=True)
    before = {stage: ws.done_stamps(stage) for stage in stages}
    line = invoke("review", "import", "--workspace", workspace, "--root", str(root), "--from", str(tmp_path / "from-cvat.xml"))
    assert f"review import: 2 images in from-cvat.xml, 1 changed ({first}: scribble), 1 unchanged" in line

    again = invoke(*run)
    assert f"ingest: {len(ids)} images, 1 changed, 0 new, 0 removed, {len(ids) - 1} unchanged (1 computed, 0 failed)" in again
    after = {stage: ws.done_stamps(stage) for stage in stages}
    assert after["superpixels"] == before["superpixels"]  # the image did not change, its scribble did
    for stage in ("seeds/scribbles", MASKS):
        assert {i for i in ids if after[stage][i] != before[stage][i]} == {first}, stage
    assert (ws.read_array("scribbles", first)[row, x0 : x1 + 1] == label).all()

    # a named image through Label Studio: a brush stroke added to its scribble
    from wsss_core.review.label_studio import brush_rle

    second = next(i for i in ids if i != first)
    out_ls = tmp_path / "review-ls"
    invoke("review", "export", "--workspace", workspace, "--mask-set", MASKS, "--ids", second, "--format", "label-studio",
           "--out", str(out_ls))
    [task] = json.loads((out_ls / "tasks.json").read_text())
    label, row, x0, x1 = unlabelled_run(ws.read_array("gt", second), ws.read_array("scribbles", second))
    stroke = np.zeros(ws.array_shape("images", second)[:2], bool)
    stroke[row, x0 : x1 + 1] = True
    result = task["predictions"][0]["result"] + [{
        "id": "new", "from_name": "scribble", "to_name": "image", "type": "brushlabels", "origin": "manual",
        "original_width": stroke.shape[1], "original_height": stroke.shape[0], "image_rotation": 0,
        "value": {"format": "rle", "rle": brush_rle(stroke), "brushlabels": [ws.classes[label]]}}]
    task.update(id=1, annotations=[{"id": 1, "result": result, "was_cancelled": False}])
    (tmp_path / "from-label-studio.json").write_text(json.dumps([task]))
    before = after
    line = invoke("review", "import", "--workspace", workspace, "--root", str(root), "--format", "label-studio",
                  "--from", str(tmp_path / "from-label-studio.json"))
    assert f"1 changed ({second}: scribble)" in line
    assert f", 1 changed, 0 new, 0 removed, {len(ids) - 1} unchanged (1 computed" in invoke(*run)
    after = {stage: ws.done_stamps(stage) for stage in stages}
    assert {i for i in ids if after[MASKS][i] != before[MASKS][i]} == {second}

    # errors: one line each, exit 2, nothing written
    output = invoke("review", "export", "--workspace", workspace, "--mask-set", "pseudo/rw", "--out", str(tmp_path / "x"), code=2)
    assert re.fullmatch(rf"error: {re.escape(workspace)}: no mask set 'pseudo/rw' \(mask sets: [^\n]*{MASKS}[^\n]*\)\n", output)
    (tmp_path / "bad.json").write_text(json.dumps([{**task, "data": {**task["data"], "image_id": "stranger"}}]))
    output = invoke("review", "import", "--workspace", workspace, "--root", str(root), "--format", "label-studio",
                    "--from", str(tmp_path / "bad.json"), code=2)
    assert output.splitlines() == [
        "error: bad.json: image 'stranger': not an image of the dataset (its split lists, as last ingested)",
        f"error: {tmp_path / 'bad.json'}: 1 problem(s); nothing was written",
    ]


def test_review_commands_have_help():
    for command in (["review"], ["review", "export"], ["review", "import"]):
        output = invoke(*command, "--help")
        assert "Usage" in output and ("--mask-set" in output if command[-1] == "export" else True), command
