"""The HTML report: its sections, the best per column marked, the worst images first, and a page
that still renders without GT, without MLflow and with failed images."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wsss_core.errors import WorkspaceError
from wsss_core.metrics import ConfusionMatrix
from wsss_core.report import SECTIONS, ReportConfig, best_marked, gather, render_html, results_text, worst_images, write_report
from wsss_core.store import INGEST_STAGE, Workspace

CLASSES = ["background", "cat"]
GOOD, BAD = "pseudo/gcn-scribbles", "pseudo/nearest-scribbles"


def square(offset: int) -> np.ndarray:
    mask = np.zeros((8, 10), np.uint8)
    mask[2:6, 2 + offset : 6 + offset] = 1
    return mask


def make_workspace(path, gt: bool = True) -> Workspace:
    """Three images with scribbles and tags; GOOD equals GT, BAD is shifted by an amount that grows
    with the image (c worst), round 1 of GOOD shifted by 1 everywhere; one image failed in BAD."""
    ws = Workspace(path)
    ws.bind_dataset({"name": "voc:toy", "format": "voc", "root": "/data/toy", "classes": CLASSES, "split": "train"})
    ws.begin_stage(INGEST_STAGE, "k0", {})
    ids = ["a", "b", "c"]
    for n, image_id in enumerate(ids):
        ws.write_array("images", image_id, np.full((8, 10, 3), 60 * n, np.uint8))
        if gt:
            ws.write_array("gt", image_id, square(0))
        scribbles = np.full((8, 10), 255, np.uint8)
        scribbles[3, 3:5] = 1
        ws.write_array("scribbles", image_id, scribbles)
        ws.write_array("tags", image_id, np.array([1], np.int64))
        ws.mark_done(INGEST_STAGE, image_id, "k0")
    masks = {GOOD: lambda n: square(0), BAD: lambda n: square(n + 1), f"{GOOD}/round-1": lambda n: square(1)}
    for stage, make in masks.items():
        ws.begin_stage(stage, "k1", {"config": {"weights": {"requested": "DEFAULT", "used": "none", "fallback": True, "note": "offline"}}})
        ws.note_stage(stage, wall_s=12.5)
        for n, image_id in enumerate(ids):
            if stage == BAD and image_id == "b":
                ws.record_failure(stage, image_id, "ValueError", "no scribble reached this region", key="k1")
                continue
            ws.write_array(stage, image_id, make(n))
            ws.mark_done(stage, image_id, "k1")
    if gt:
        write_evaluation(ws, list(masks), ids)
    return ws


def write_evaluation(ws: Workspace, stages: list[str], ids: list[str]) -> None:
    """reports/evaluation-test.json as the evaluate flow writes it (real confusion matrices)."""
    results = {}
    for stage in stages:
        matrix = ConfusionMatrix(len(CLASSES))
        for image_id in ws.done_ids(stage):
            matrix.update(ws.read_array(stage, image_id), ws.read_array("gt", image_id))
        results[stage] = {**matrix.to_dict(), "splits": {"train": matrix.to_dict()}}
    (ws.path / "reports").mkdir(exist_ok=True)
    (ws.path / "reports" / "evaluation-test.json").write_text(json.dumps({"time": time.time(), "splits": None, "results": results}))


def test_every_section_with_the_best_marked_and_the_failures(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    report = gather(ws, ReportConfig(mlflow=True))
    page = render_html(report)
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in page and f'href="#{key}"' in page
    assert report.best_stage == GOOD
    results = page.split('<table class="results">')[1].split("</table>")[0]
    best = re.findall(r'<td class="num best">([^<]*)</td>', results)
    assert best == ["100.0", "100.0"]  # the "all" and "train" columns: GOOD's row
    assert re.search(rf"<td>{GOOD}</td><td class=\"num best\">100.0", results)
    assert "no scribble reached this region" in page and "12.5 s" in page
    assert "offline" in page and "voc:toy" in page and "scribbles, tags" in page
    assert "no MLflow store" in page  # this workspace logged nothing
    assert "http" not in page  # nothing fetched from the network
    # the confusion matrix; 3 sample and 3 worst rows of 6 panels, less b in BAD (failed) in each
    assert page.count("<img ") == 1 + 2 * (3 * 6 - 1) and page.count("not computed") == 2
    assert "tags: cat" in page
    # round 1 of GOOD (shifted) scored below GOOD itself: the page says which masks to take
    assert f"<p class='bad'>{GOOD}/round-1 scored " in page and f"the better masks of this method are {GOOD}</p>" in page


def test_the_worst_images_come_first(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    ranked, note = worst_images(ws, BAD, ws.image_ids())
    assert [i for i, _ in ranked] == ["c", "a"]  # c is shifted most; b failed
    assert "lowest per-image mIoU" in note and ranked[0][1].startswith("mIoU ")
    report = gather(ws, ReportConfig(worst=1, mlflow=False))
    assert [row.image_id for row in report.worst] == ["a"]  # the best stage is perfect: ties by id


def test_without_ground_truth_the_page_says_what_it_cannot_rank(tmp_path):
    ws = make_workspace(tmp_path / "ws", gt=False)
    report = gather(ws, ReportConfig(mlflow=False))
    page = render_html(report)
    assert report.results == {} and report.worst == [] and report.best_stage is None
    assert "Nothing scored: no ground truth" in page
    assert "no label-free confidence" in report.worst_note
    assert len(report.sample) == 3 and "ground truth" not in {p.name for p in report.sample[0].panels}


def test_best_marks_ties_and_skips_missing():
    assert best_marked([0.5, None, 0.5, 0.2]) == [("50.0", "num best"), ("-", "num"), ("50.0", "num best"), ("20.0", "num")]
    assert best_marked([None]) == [("-", "num")]


def test_results_text_rows_in_pipeline_order_best_of_each_split_starred():
    def scores(train, val):
        return {"images": 3, "splits": {"train": {"miou": train}, **({"val": {"miou": val}} if val is not None else {})}}

    text = results_text({
        "pseudo/gcn-scribbles/round-1": scores(0.9, 0.8),
        "pseudo/gcn-scribbles": scores(0.85, 0.81),
        "pseudo/nearest-scribbles": scores(0.3, None),
    })
    lines = text.splitlines()
    assert lines[0].split() == ["method", "round", "mask", "set", "mIoU", "train", "mIoU", "val", "images"]
    assert [line.split()[2] for line in lines[1:]] == [  # the baseline first, then the method and its rounds
        "pseudo/nearest-scribbles", "pseudo/gcn-scribbles", "pseudo/gcn-scribbles/round-1"]
    assert lines[1].split()[:5] == ["nearest-scribbles", "0", "pseudo/nearest-scribbles", "30.0", "-"]
    assert lines[2].split()[3:5] == ["85.0", "81.0*"] and lines[3].split()[3:5] == ["90.0*", "80.0"]


def test_write_report_defaults_to_the_reports_folder_and_refuses_a_broken_evaluation(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    path = write_report(ws.path, config=ReportConfig(mlflow=False))
    assert path == ws.path / "reports" / "report.html" and path.read_text().startswith("<!DOCTYPE html>")
    (ws.path / "reports" / "evaluation-broken.json").write_text("{")
    with pytest.raises(WorkspaceError, match=r"evaluation-broken.json: not an evaluation report"):
        write_report(ws.path, tmp_path / "out.html")


def test_the_command_writes_the_page_and_starts_no_prefect(tmp_path):
    """`wsss report` runs no flow: Prefect is never imported (so no server starts)."""
    ws = make_workspace(tmp_path / "ws")
    out = tmp_path / "page.html"
    script = (
        "import sys; from cli import app\n"
        f"app(['report', '--workspace', {str(ws.path)!r}, '--out', {str(out)!r}], standalone_mode=False)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'prefect'], 'prefect imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(out) and "<section id=\"results\">" in out.read_text()


def test_without_ground_truth_the_worst_images_are_the_least_confident(tmp_path):
    from wsss_core.confidence import mask_attributes

    ws = make_workspace(tmp_path / "ws", gt=False)
    for image_id, margin in (("a", 0.9), ("b", 0.2), ("c", 0.5)):  # rewritten with scores, as the mask tasks do
        ws.write_array(GOOD, image_id, square(0), attributes=mask_attributes({"margin": margin, "max_probability": 0.9}))
    ranked, note = worst_images(ws, GOOD, ws.image_ids())
    assert [i for i, _ in ranked] == ["b", "c", "a"] and ranked[0][1] == "confidence 0.200"
    assert "lowest label-free confidence first" in note
