"""A dataset that changes between runs: ingest notices every change, and each result is what a
clean run of the dataset as it is now gives (wsss_core.lineage, wsss_core.refit)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flows.common import Execution, flow_result
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from benchmarks.dataset_changes import (
    add_images,
    array_differences,
    change_dataset,
    change_gt,
    fix_scribble,
    move_first_box,
    read_split,
    remove_from_split,
    replace_image,
)
from wsss_core.errors import WorkspaceError
from wsss_core.garbage import collect_garbage
from wsss_core.requests import GraphNetRequest
from wsss_core.store import INGEST_STAGE, Workspace

QUIET = Execution(progress=False, batch_size=4)
SMALL = dict(preset="offline", overrides={"gcn": {"pretrain_epochs": 40}}, log_to_mlflow=False)


@pytest.fixture()
def root(synthetic_root, tmp_path):
    """A copy of the session's dataset that a test may edit."""
    return shutil.copytree(synthetic_root, tmp_path / "data")


def ingest(root, workspace, **options):
    return flow_result(ingest_flow, root=str(root), workspace=str(workspace), execution=QUIET, **options)


def graphnet(workspace, **options):
    return flow_result(graphnet_flow, workspace=str(workspace), request=GraphNetRequest(**{**SMALL, **options}), execution=QUIET)


def prepared(root, tmp_path, **options) -> tuple[Workspace, list[str]]:
    """A workspace of the dataset with the GraphNet path run (options: graphnet_flow's), and the train ids."""
    ws = Workspace(tmp_path / "ws")
    ingest(root, ws.path)
    graphnet(ws.path, **options)
    return ws, read_split(root, "train")


def stamps(ws: Workspace, stage: str) -> dict[str, int]:
    return ws.done_stamps(stage)


def test_ingest_reports_each_kind_of_change_and_reads_only_changed_and_new(root, tmp_path):
    ws = Workspace(tmp_path / "ws")
    first = ingest(root, ws.path)
    ids = read_split(root, "train")
    assert first.line() == f"ingest: {len(ids)} images, 0 changed, {len(ids)} new, 0 removed, 0 unchanged ({len(ids)} computed, 0 failed)"
    before = stamps(ws, INGEST_STAGE)

    fix_scribble(root, ids[0])
    (root / "JPEGImages" / f"{ids[3]}.jpg").touch()  # a new mtime, the same bytes: no change
    remove_from_split(root, ids[2])
    [added] = add_images(root, 1)
    again = ingest(root, ws.path)
    assert again.line() == f"ingest: {len(ids)} images, 1 changed, 1 new, 1 removed, {len(ids) - 2} unchanged (2 computed, 0 failed)"
    assert again.done == 2  # read again: the changed one and the new one, nothing else
    after = stamps(ws, INGEST_STAGE)
    assert {i for i in before if after.get(i) != before[i]} == {ids[0], ids[3]}  # ids[3]: its marker's stat refreshed
    assert ids[2] not in ws.image_ids() and added in ws.image_ids()
    assert ws.dropped_ids() == [ids[2]]
    assert ws.stage_meta(INGEST_STAGE)["changes"] == {"changed": 1, "new": 1, "removed": 1, "unchanged": len(ids) - 2}
    marker = ws.marker(INGEST_STAGE, ids[0], ws.stage_key(INGEST_STAGE))
    assert marker["changed"] == ["scribbles"] and marker["sources"]["scribble"]["sha256"]

    third = ingest(root, ws.path)  # nothing changed since: a stat per file, nothing read
    assert third.done == 0 and f", 0 changed, 0 new, 0 removed, {len(ids)} unchanged (" in third.line()


def test_a_removed_image_that_comes_back_is_known_by_its_fingerprint(root, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ingest(root, ws.path)
    ids = read_split(root, "train")
    remove_from_split(root, ids[1])
    ingest(root, ws.path)
    assert ids[1] not in ws.image_ids()
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in ids))
    back = ingest(root, ws.path)
    assert back.done == 0 and ids[1] in ws.image_ids()
    assert f", 0 changed, 0 new, 0 removed, {len(ids)} unchanged (" in back.line()


def test_a_fixed_scribble_recomputes_its_descendants_only_and_matches_a_clean_run(root, tmp_path):
    ws, ids = prepared(root, tmp_path, evaluate=False)
    superpixels, seeds, masks = (stamps(ws, s) for s in ("superpixels", "seeds/scribbles", "pseudo/gcn-scribbles"))
    baseline = stamps(ws, "pseudo/nearest-scribbles")

    fix_scribble(root, ids[0])
    ingest(root, ws.path)
    run = graphnet(ws.path, evaluate=False)
    lines = {s.stage: s for s in run.summaries}
    assert lines["superpixels"].done == 0 and lines["graphs"].done == 0  # the image did not change
    assert lines["seeds/scribbles"].done == 1 and lines["pseudo/nearest-scribbles"].done == 1
    assert stamps(ws, "superpixels") == superpixels
    changed = [s for s in ("seeds/scribbles", "pseudo/gcn-scribbles") if stamps(ws, s)[ids[0]] != (seeds, masks)[s == "pseudo/gcn-scribbles"][ids[0]]]
    assert changed == ["seeds/scribbles", "pseudo/gcn-scribbles"]
    assert stamps(ws, "pseudo/nearest-scribbles")[ids[1]] == baseline[ids[1]]
    # 1 of 12 images changed: within the refit rule's 10 %, the shared GCN is kept and the changed
    # image gets a GCN fitted on every image as they are now: a clean run's
    assert "1 changed since the fit" in lines["gcn-weights/gcn-scribbles"].note

    clean = Workspace(tmp_path / "clean")
    ingest(root, clean.path)
    graphnet(clean.path, evaluate=False)
    assert array_differences(ws, clean, [ids[0]]) == []


def test_the_scheduled_change_gives_a_clean_runs_outputs(root, tmp_path):
    """One scribble fixed, one image replaced, one id removed, two added: past the refit rule, so
    the shared GCN is fitted again and every image's outputs equal a clean run's."""
    ws, _ = prepared(root, tmp_path, evaluate=False)
    changes = change_dataset(root)
    summary = ingest(root, ws.path)
    assert ", 2 changed, 2 new, 1 removed, 7 unchanged (" in summary.line()
    graphnet(ws.path)

    clean = Workspace(tmp_path / "clean")
    ingest(root, clean.path)
    graphnet(clean.path)
    assert ws.image_ids() == clean.image_ids() and changes["removed"] not in ws.image_ids()
    assert array_differences(ws, clean, clean.image_ids()) == []
    scores, clean_scores = (json.loads(next((w.path / "reports").glob("evaluation-*.json")).read_text()) for w in (ws, clean))
    for stage, entry in clean_scores["results"].items():
        assert scores["results"][stage]["miou"] == entry["miou"], stage


def test_a_changed_gt_mask_recomputes_nothing_and_is_scored_again(root, tmp_path):
    ws, ids = Workspace(tmp_path / "ws"), read_split(root, "train")
    ingest(root, ws.path)
    first = graphnet(ws.path, propagation="label-propagation")
    change_gt(root, ids[0])
    ingest(root, ws.path)
    again = graphnet(ws.path, propagation="label-propagation")
    assert all(summary.done == 0 for summary in again.summaries)
    stage = "pseudo/labelprop-scribbles"
    assert again.evaluation[stage]["miou"] != first.evaluation[stage]["miou"]


def test_a_moved_box_reaches_the_boxes_path_only(root, tmp_path):
    ws, ids = prepared(root, tmp_path, until="seeds")
    graphnet(ws.path, supervision="boxes", until="seeds")
    move_first_box(root, ids[0])
    ingest(root, ws.path)
    marker = ws.marker(INGEST_STAGE, ids[0], ws.stage_key(INGEST_STAGE))
    assert marker["changed"] == ["boxes"]
    assert ids[0] not in ws.done_ids("seeds/boxes")
    assert {ids[0]} <= ws.done_ids("seeds/scribbles") & ws.done_ids("superpixels") & ws.done_ids("graphs")


def test_a_replaced_image_recomputes_everything_of_it(root, tmp_path):
    ws, ids = prepared(root, tmp_path, until="seeds")
    replace_image(root, ids[0])
    ingest(root, ws.path)
    for stage in ("superpixels", "graphs", "seeds/scribbles"):
        assert ids[0] not in ws.done_ids(stage) and ids[1] in ws.done_ids(stage)


def test_a_removed_image_is_in_no_result(root, tmp_path):
    ws, ids = prepared(root, tmp_path, propagation="label-propagation")
    masks = ws.read_array("pseudo/labelprop-scribbles", ids[0])
    remove_from_split(root, ids[0])
    ingest(root, ws.path)
    run = graphnet(ws.path, propagation="label-propagation")
    assert all(s.total == len(ids) - 1 for s in run.summaries)
    assert run.evaluation["pseudo/labelprop-scribbles"]["images"] == len(ids) - 1
    assert ws.status("pseudo/labelprop-scribbles").done == len(ids) - 1
    assert ws.status(INGEST_STAGE).done == len(ids) - 1

    # gc deletes its arrays; back in the list, it is read and computed again, like a new image
    assert collect_garbage(ws).images == [ids[0]] and not ws.has_array("images", ids[0])
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in ids))
    assert ", 0 changed, 1 new, 0 removed, 9 unchanged (" in ingest(root, ws.path).line()
    back = graphnet(ws.path, propagation="label-propagation", evaluate=False)
    assert {s.stage: s.done for s in back.summaries}["pseudo/labelprop-scribbles"] == 1
    assert np.array_equal(ws.read_array("pseudo/labelprop-scribbles", ids[0]), masks)


def test_a_changed_class_list_is_refused_in_one_line(root, tmp_path):
    ingest(root, tmp_path / "ws")
    classes = (root / "classes.txt").read_text().splitlines()
    (root / "classes.txt").write_text("\n".join(classes + ["newcomer"]) + "\n")
    with pytest.raises(WorkspaceError, match=r"^[^\n]*class list[^\n]*new --workspace[^\n]*$"):
        ingest(root, tmp_path / "ws")


def test_coco_notices_a_changed_annotation_of_its_image_only(tmp_path):
    from tests.wsss_core.data.test_coco import instances, write_dataset

    data = instances()
    path = write_dataset(tmp_path / "coco", data)
    ws = Workspace(tmp_path / "ws")
    ingest(path, ws.path, format="coco", image_dir=str(tmp_path / "coco" / "images"))
    boxes = ws.read_array("boxes", "img_a")
    data["annotations"][0]["bbox"] = [2, 1, 8, 7]  # img_a's cat box, moved
    data["annotations"] = data["annotations"] + [{**data["annotations"][0], "id": 99, "image_id": 12345}]  # no such image
    path.write_text(json.dumps(data))
    again = ingest(path, ws.path, format="coco", image_dir=str(tmp_path / "coco" / "images"))
    assert ", 1 changed, 0 new, 0 removed, 1 unchanged (" in again.line() and again.done == 1
    assert ws.marker(INGEST_STAGE, "img_a", ws.stage_key(INGEST_STAGE))["changed"] == ["boxes"]
    assert not np.array_equal(ws.read_array("boxes", "img_a"), boxes)
