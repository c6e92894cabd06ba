"""wsss review: export -> the format's own parser -> import gives back the same annotations, and
what a person changes becomes dataset files (and nothing else does).

CVAT has no light parser on the registry, so its file is read back here by an independent
reading of the documented CVAT for images 1.1 structure (xml.etree, the RLE rule of the docs);
Label Studio's brush RLE is decoded with Label Studio's converter.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from label_studio_converter.brush import decode_rle
from PIL import Image

from wsss_core.confidence import mask_attributes, read_confidence, worst
from wsss_core.data.sample import Box
from wsss_core.data.voc import VocReader
from wsss_core.errors import UsageError, WorkspaceError
from wsss_core.review import cvat
from wsss_core.review.dataset import import_review, write_atomic
from wsss_core.review.export import export_review, select_images
from wsss_core.review.labels import ReviewFileError
from wsss_core.store import INGEST_STAGE, Workspace

MASKS = "pseudo/gcn-scribbles"
BASELINE = "pseudo/nearest-scribbles"


@pytest.fixture()
def root(synthetic_root, tmp_path) -> Path:
    """A copy of the session's dataset (12 images, 96x72) that a test may change."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "data"))


@pytest.fixture()
def ws(root, tmp_path) -> Workspace:
    """The dataset ingested as `wsss ingest` stores it (without Prefect), with a pseudo-mask set:
    the GT with a stripe wrong, and a confidence per image; and a baseline without scores."""
    reader = VocReader(root)
    ws = Workspace(tmp_path / "ws")
    ws.bind_dataset(reader.describe())
    for stage, key in ((INGEST_STAGE, "k0"), (MASKS, "k1"), (BASELINE, "k2")):
        ws.begin_stage(stage, key, {})
    for n, image_id in enumerate(reader.image_ids()):
        sample = reader.load(image_id)
        arrays = {"images": sample.image, "gt": sample.gt, "scribbles": sample.scribble,
                  "boxes": sample.boxes_array(), "tags": np.asarray(sample.tags, np.int32)}
        for group, array in arrays.items():
            ws.write_array(group, image_id, array)
        ws.mark_done(INGEST_STAGE, image_id, "k0")
        mask = np.where(sample.gt == 255, 0, sample.gt).astype(np.uint8)
        mask[:, n % 5 :: 7] = 0  # wrong somewhere, differently per image
        score = ((n * 7) % 12) / 12  # not in id order
        ws.write_array(MASKS, image_id, mask, attributes=mask_attributes({"margin": score, "max_probability": 1.0}))
        ws.mark_done(MASKS, image_id, "k1")
        ws.write_array(BASELINE, image_id, mask)
        ws.mark_done(BASELINE, image_id, "k2")
    return ws


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ selection


def test_the_worst_are_the_ones_status_lists_lowest_first(ws):
    ids, scores = select_images(ws, MASKS, worst_n=4)
    expected = worst(read_confidence(ws, MASKS), 4)
    assert list(zip(ids, (scores[i] for i in ids))) == expected
    assert scores[ids[0]] == 0.0 and scores[ids[0]] <= scores[ids[1]] <= scores[ids[3]]
    named, named_scores = select_images(ws, MASKS, ids=[ids[2], ids[0]])
    assert named == [ids[2], ids[0]] and named_scores[ids[0]] == 0.0


def test_an_image_the_dataset_no_longer_lists_is_not_reviewed(ws):
    [lowest] = select_images(ws, MASKS, worst_n=1)[0]
    ws.set_split("train", [i for i in ws.image_ids() if i != lowest])  # as an ingest records a shorter list
    assert lowest not in read_confidence(ws, MASKS)  # nor in `wsss status`, which reads the same
    assert lowest not in select_images(ws, MASKS, worst_n=20)[0]
    with pytest.raises(UsageError, match=f"not images of the dataset: {lowest}"):
        select_images(ws, MASKS, ids=[lowest])


def test_a_bad_request_is_one_line(ws, tmp_path):
    with pytest.raises(WorkspaceError, match=r"no mask set 'pseudo/rw' \(mask sets: pseudo/gcn-scribbles, pseudo/nearest-scribbles\)$"):
        select_images(ws, "pseudo/rw", worst_n=3)
    with pytest.raises(WorkspaceError, match=r"pseudo/nearest-scribbles: no confidence stored .* name the images with --ids$"):
        select_images(ws, BASELINE, worst_n=3)
    with pytest.raises(UsageError, match=r"^not images of the dataset: nope$"):
        select_images(ws, MASKS, ids=["nope"])
    with pytest.raises(UsageError, match="not both"):
        select_images(ws, MASKS, worst_n=2, ids=["a"])
    with pytest.raises(UsageError, match="unknown review format 'coco'"):
        export_review(ws, MASKS, tmp_path / "out", "coco", worst_n=2)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- CVAT


def documented_runs(rle: str, width: int, height: int) -> np.ndarray:
    """A CVAT mask's rle over its width x height box: runs alternately outside and inside, outside first."""
    runs = [int(v) for v in rle.split(",")]
    flat = np.zeros(width * height, bool)
    position = 0
    for n, run in enumerate(runs):
        flat[position : position + run] = n % 2 == 1
        position += run
    assert position == width * height
    return flat.reshape(height, width)


def documented_cvat(path: Path) -> dict[str, dict]:
    """A CVAT for images 1.1 file read by its documented structure alone: per image name, its size,
    masks painted by role (the rle's runs over the mask's box, row by row, alternately outside and
    inside, outside first), boxes, tags and the confidence attribute."""
    root = ET.parse(path).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    labels = [label.findtext("name") for label in root.find("meta/task/labels")]
    images = {}
    for image in root.findall("image"):
        width, height = int(image.get("width")), int(image.get("height"))
        painted = {role: np.full((height, width), 255, np.uint8) for role in ("pseudo", "scribble")}
        found = {"size": (height, width), "boxes": [], "tags": [], "confidence": None, "id": int(image.get("id"))}
        for mask in image.findall("mask"):
            attributes = {a.get("name"): a.text for a in mask.findall("attribute")}
            left, top, w, h = (int(mask.get(k)) for k in ("left", "top", "width", "height"))
            region = painted[attributes["role"]][top : top + h, left : left + w]
            region[documented_runs(mask.get("rle"), w, h)] = labels.index(mask.get("label"))
            if attributes.get("confidence"):
                found["confidence"] = float(attributes["confidence"])
        for box in image.findall("box"):
            x0, y0, x1, y1 = (round(float(box.get(k))) for k in ("xtl", "ytl", "xbr", "ybr"))
            found["boxes"].append((labels.index(box.get("label")), x0, y0, x1, y1))
        found["tags"] = sorted(labels.index(tag.get("label")) for tag in image.findall("tag"))
        found.update(painted)
        images[image.get("name")] = found
    return images


def test_the_cvat_rle_reads_the_documented_example():
    rle = "3, 5, 7, 7, 5, 9, 3, 11, 2, 11, 2, 12, 1, 12, 1, 26, 1, 12, 1, 12, 2, 11, 3, 9, 5, 7, 7, 5, 3"
    disc = cvat.decode_mask(rle, 707, 888, 13, 15, (1200, 1600))[888:903, 707:720]
    assert disc.sum() == 195 - sum(int(v) for v in rle.split(",")[::2])
    assert np.array_equal(disc, documented_runs(rle, 13, 15)) and disc[7].all()
    assert disc[0].tolist() == [0] * 3 + [1] * 5 + [0] * 5 and disc[14].tolist() == [0] * 5 + [1] * 5 + [0] * 3
    assert cvat.encode_mask(np.pad(disc, ((888, 297), (707, 880))))[0] == rle
    with pytest.raises(ValueError, match="covers 194 pixels"):
        cvat.decode_mask(rle.replace("3, 5", "2, 5", 1), 707, 888, 13, 15, (1200, 1600))


def test_cvat_round_trip(ws, root, tmp_path):
    result = export_review(ws, MASKS, tmp_path / "out", "cvat", worst_n=4)
    assert result.task_file == tmp_path / "out" / "annotations.xml"
    manifest = json.loads((tmp_path / "out" / "review.json").read_text())
    assert [entry["id"] for entry in manifest["images"]] == result.image_ids
    documented = documented_cvat(result.task_file)
    assert sorted(documented) == sorted(f"images/{i}.png" for i in result.image_ids)
    assert [documented[n]["id"] for n in sorted(documented)] == list(range(4))  # ids: lexical order of names
    for image_id in result.image_ids:
        found = documented[f"images/{image_id}.png"]
        image = np.asarray(Image.open(tmp_path / "out" / "images" / f"{image_id}.png"))
        assert np.array_equal(image, ws.read_array("images", image_id)) and found["size"] == image.shape[:2]
        assert np.array_equal(found["pseudo"], ws.read_array(MASKS, image_id))  # one mask per class, all of it
        assert np.array_equal(found["scribble"], ws.read_array("scribbles", image_id))
        assert sorted(found["boxes"]) == sorted(map(tuple, ws.read_array("boxes", image_id).tolist()))
        assert found["tags"] == ws.read_array("tags", image_id).tolist()
        assert found["confidence"] == pytest.approx(result.confidence[image_id], abs=1e-4)

    read = {labels.image_id: labels for labels in cvat.read_cvat(result.task_file, ws.classes, 3)}
    assert sorted(read) == sorted(result.image_ids)
    for image_id, labels in read.items():  # the import side reads the same annotations
        assert np.array_equal(labels.scribble, ws.read_array("scribbles", image_id))
        assert sorted((b.class_index, b.x0, b.y0, b.x1, b.y1) for b in labels.boxes) == sorted(
            map(tuple, ws.read_array("boxes", image_id).tolist()))
        assert labels.tags == ws.read_array("tags", image_id).tolist() and labels.mask is None

    before = tree_digest(root)
    report = import_review(ws, root, result.task_file, "cvat")
    assert report.changes == [] and report.line() == "review import: 4 images in annotations.xml, 0 changed, 4 unchanged"
    with zipfile.ZipFile(tmp_path / "task.zip", "w") as archive:  # CVAT's export: a zip with annotations.xml
        archive.write(result.task_file, "annotations.xml")
    assert import_review(ws, root, tmp_path / "task.zip", "cvat").changes == []
    assert tree_digest(root) == before


def stroke_through(gt: np.ndarray, scribble: np.ndarray) -> tuple[int, int, int, int]:
    """(class, row, first col, last col): a horizontal run of one GT class the scribble leaves unlabelled."""
    for row in range(2, gt.shape[0] - 2):
        for label in np.unique(gt[row]):
            if label == 255:
                continue
            cols = np.flatnonzero((gt[row] == label) & (scribble[row] == 255) & (scribble[row - 1] == 255) & (scribble[row + 1] == 255))
            if len(cols) >= 6 and cols[5] - cols[0] == 5:
                return int(label), row, int(cols[0]), int(cols[0]) + 5
    raise AssertionError("no room for a stroke")


def test_cvat_corrections_become_dataset_files_and_nothing_else_changes(ws, root, tmp_path):
    result = export_review(ws, MASKS, tmp_path / "out", "cvat", worst_n=3)
    first, second, third = result.image_ids
    classes = ws.classes
    tree = ET.parse(result.task_file)
    images = {image.get("name"): image for image in tree.getroot().findall("image")}
    # first: a new scribble stroke, drawn as a polyline
    gt, scribble = ws.read_array("gt", first), ws.read_array("scribbles", first)
    label, row, x0, x1 = stroke_through(gt, scribble)
    ET.SubElement(images[f"images/{first}.png"], "polyline", {"label": classes[label], "points": f"{x0},{row};{x1},{row}", "occluded": "0"})
    # second: a new box (its class becomes a tag too, if it was not one)
    second_image = images[f"images/{second}.png"]
    ET.SubElement(second_image, "box", {"label": classes[1], "xtl": "2", "ytl": "3", "xbr": "20.4", "ybr": "15.6", "occluded": "0"})
    # third: a full mask drawn by a person (role manual: CVAT's default for what is drawn)
    manual = np.zeros(gt.shape, bool)
    manual[10:30, 20:50] = True
    rle, left, top, width, height = cvat.encode_mask(manual)
    ET.SubElement(images[f"images/{third}.png"], "mask", {
        "label": classes[2], "rle": rle, "left": str(left), "top": str(top), "width": str(width), "height": str(height)})
    tree.write(tmp_path / "corrected.xml")

    before = tree_digest(root)
    report = import_review(ws, root, tmp_path / "corrected.xml", "cvat")
    assert {c.image_id: c.parts for c in report.changes} == {first: ["scribble"], second: ["boxes", "tags"] if 1 not in ws.read_array("tags", second) else ["boxes"], third: ["mask"]}
    assert f"{first}: scribble" in report.line() and "3 changed" in report.line()
    after = tree_digest(root)
    assert {name for name in after if after[name] != before.get(name)} == {
        f"scribbles/{first}.png", f"Annotations/{second}.xml", f"SegmentationClassManual/{third}.png"}  # GT never changes

    reader = VocReader(root)
    new = reader.load(first).scribble
    assert (new[row, x0 : x1 + 1] == label).all()
    assert np.array_equal(new[scribble != 255], scribble[scribble != 255])  # the old strokes stay
    boxes = reader.load(second).boxes
    assert Box(1, 2, 3, 20, 16) in boxes and len(boxes) == len(ws.read_array("boxes", second)) + 1
    assert 1 in reader.load(second).tags
    drawn = reader.load(third)
    assert (drawn.manual[manual] == 2).all() and (drawn.manual[~manual] == 0).all()
    assert np.array_equal(drawn.gt, ws.read_array("gt", third))
    again = import_review(ws, root, tmp_path / "corrected.xml", "cvat")  # the dataset holds the corrections now
    assert not again.changes
    assert not list(root.rglob(".*.tmp"))  # written atomically: no temporary file left


def test_bad_cvat_files_get_a_line_each_and_change_nothing(ws, root, tmp_path):
    result = export_review(ws, MASKS, tmp_path / "out", "cvat", worst_n=3)
    first, second, third = result.image_ids
    tree = ET.parse(result.task_file)
    images = {image.get("name"): image for image in tree.getroot().findall("image")}
    ET.SubElement(images[f"images/{first}.png"], "polyline", {"label": "unicorn", "points": "1,1;5,5"})
    images[f"images/{second}.png"].set("width", "100")
    images[f"images/{third}.png"].set("name", "images/stranger.png")
    ET.SubElement(images[f"images/{first}.png"], "box", {"label": "background", "xtl": "1", "ytl": "1", "xbr": "9", "ybr": "9"})
    tree.write(tmp_path / "bad.xml")
    before = tree_digest(root)
    with pytest.raises(ReviewFileError) as caught:
        import_review(ws, root, tmp_path / "bad.xml", "cvat")
    assert sorted(caught.value.problems) == sorted([
        f"bad.xml: image 'images/{first}.png': unknown label 'unicorn' (classes: {', '.join(ws.classes)})",
        f"bad.xml: image 'images/{first}.png': background box: boxes and tags are of object classes",
        f"bad.xml: image {second!r}: annotated as 100x72, the image is 96x72",
        "bad.xml: image 'stranger': not an image of the dataset (its split lists, as last ingested)",
    ])
    assert tree_digest(root) == before


# --------------------------------------------------------------------------- Label Studio


def tool_export(tasks: list[dict], edit=None) -> list[dict]:
    """What Label Studio exports after a person submitted each task with its predictions accepted
    (and `edit` applied to the results of the first task)."""
    exported = copy.deepcopy(tasks)
    for n, task in enumerate(exported):
        result = copy.deepcopy(task["predictions"][0]["result"])
        if edit is not None and n == 0:
            result = edit(result)
        task["id"] = n + 1
        task["annotations"] = [{"id": n + 1, "result": result, "was_cancelled": False, "updated_at": "2026-12-07T09:00:00Z"}]
    return exported


def test_label_studio_round_trip(ws, root, tmp_path):
    result = export_review(ws, MASKS, tmp_path / "out", "label-studio", worst_n=4)
    tasks = json.loads(result.task_file.read_text())
    config = ET.parse(tmp_path / "out" / "labeling-config.xml").getroot()
    controls = {element.get("name"): element.tag for element in config if element.get("toName") == "image"}
    assert controls == {"tags": "Choices", "box": "RectangleLabels", "scribble": "BrushLabels", "pseudo": "BrushLabels", "mask": "BrushLabels"}
    assert [task["data"]["image_id"] for task in tasks] == result.image_ids  # lowest confidence first
    for task in tasks:
        image_id = task["data"]["image_id"]
        assert task["data"]["image"] == f"/data/local-files/?d=images/{image_id}.png"
        prediction = task["predictions"][0]
        assert prediction["score"] == result.confidence[image_id]
        height, width = ws.array_shape("images", image_id)[:2]
        painted = {name: np.full((height, width), 255, np.uint8) for name in ("pseudo", "scribble")}
        boxes, tags = [], []
        for item in prediction["result"]:
            value = item["value"]
            if item["type"] == "brushlabels":  # Label Studio's converter decodes the RLE
                assert (item["original_width"], item["original_height"]) == (width, height)
                alpha = decode_rle(value["rle"]).reshape(height, width, 4)[:, :, 3]
                painted[item["from_name"]][alpha == 255] = ws.classes.index(value["brushlabels"][0])
            elif item["type"] == "rectanglelabels":
                x0, y0 = round(value["x"] * width / 100), round(value["y"] * height / 100)
                x1, y1 = x0 + round(value["width"] * width / 100), y0 + round(value["height"] * height / 100)
                boxes.append((ws.classes.index(value["rectanglelabels"][0]), x0, y0, x1, y1))
            else:
                tags = [ws.classes.index(name) for name in value["choices"]]
        assert np.array_equal(painted["pseudo"], ws.read_array(MASKS, image_id))
        assert np.array_equal(painted["scribble"], ws.read_array("scribbles", image_id))
        assert sorted(boxes) == sorted(map(tuple, ws.read_array("boxes", image_id).tolist()))
        assert tags == ws.read_array("tags", image_id).tolist()

    (tmp_path / "export.json").write_text(json.dumps(tool_export(tasks)))
    before = tree_digest(root)
    report = import_review(ws, root, tmp_path / "export.json", "label-studio")
    assert report.changes == [] and "4 images in export.json, 0 changed, 4 unchanged" in report.line()
    assert tree_digest(root) == before


def test_label_studio_corrections_become_dataset_files(ws, root, tmp_path):
    from wsss_core.review.label_studio import brush_rle

    result = export_review(ws, MASKS, tmp_path / "out", "label-studio", worst_n=2)
    first = result.image_ids[0]
    gt, scribble = ws.read_array("gt", first), ws.read_array("scribbles", first)
    label, row, x0, x1 = stroke_through(gt, scribble)
    stroke = np.zeros(gt.shape, bool)
    stroke[row, x0 : x1 + 1] = True
    height, width = gt.shape

    def edit(results: list[dict]) -> list[dict]:  # a brush stroke added to the scribble, the tags cleared
        results = [r for r in results if r["type"] != "choices"]
        return results + [{"from_name": "scribble", "to_name": "image", "type": "brushlabels", "original_width": width,
                           "original_height": height, "value": {"format": "rle", "rle": brush_rle(stroke),
                                                                "brushlabels": [ws.classes[label]]}}]

    (tmp_path / "export.json").write_text(json.dumps(tool_export(json.loads(result.task_file.read_text()), edit)))
    before = tree_digest(root)
    report = import_review(ws, root, tmp_path / "export.json", "label-studio")
    boxed = sorted({int(c) for c in ws.read_array("boxes", first)[:, 0]})
    tags_changed = boxed != ws.read_array("tags", first).tolist()
    assert [(c.image_id, c.parts) for c in report.changes] == [(first, ["scribble"] + (["tags"] if tags_changed else []))]
    after = tree_digest(root)
    assert {n for n in after if after[n] != before.get(n)} == {f"scribbles/{first}.png"} | (
        {f"Annotations/{first}.xml"} if tags_changed else set())
    new = VocReader(root).load(first).scribble
    assert (new[row, x0 : x1 + 1] == label).all() and np.array_equal(new[scribble != 255], scribble[scribble != 255])


def test_bad_label_studio_files_get_a_line_each_and_change_nothing(ws, root, tmp_path):
    result = export_review(ws, MASKS, tmp_path / "out", "label-studio", worst_n=2)

    def edit(results: list[dict]) -> list[dict]:
        scribbles = [r for r in results if r["from_name"] == "scribble"]
        scribbles[0]["value"]["brushlabels"] = ["unicorn"]
        small = np.zeros((10, 10), bool)
        from wsss_core.review.label_studio import brush_rle

        scribbles[1]["value"]["rle"] = brush_rle(small)
        return results

    (tmp_path / "bad.json").write_text(json.dumps(tool_export(json.loads(result.task_file.read_text()), edit)))
    before = tree_digest(root)
    with pytest.raises(ReviewFileError) as caught:
        import_review(ws, root, tmp_path / "bad.json", "label-studio")
    first = result.image_ids[0]
    assert caught.value.problems == [
        f"bad.json: image {first!r}: unknown label 'unicorn' (classes: {', '.join(ws.classes)})",
        f"bad.json: image {first!r}: brush rle holds 100 pixels, the 96x72 image 6912",
    ]
    assert tree_digest(root) == before


def test_an_atomic_write_keeps_the_mode_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"old")
    path.chmod(0o640)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
