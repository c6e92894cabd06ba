"""Label Studio: JSON tasks with brush RLE predictions out, its JSON export of annotations back.

A task (Label Studio's import format)::

    {"data": {"image": "/data/local-files/?d=images/a.png", "image_id": "a", "confidence": 0.41, ...},
     "predictions": [{"model_version": "wsss pseudo/gcn-scribbles", "score": 0.41, "result": [
        {"from_name": "pseudo", "to_name": "image", "type": "brushlabels",
         "original_width": 96, "original_height": 72, "image_rotation": 0,
         "value": {"format": "rle", "rle": [...], "brushlabels": ["cat"]}},
        {"from_name": "box", "type": "rectanglelabels",
         "value": {"x": 10.4, "y": 5.5, "width": 20.8, "height": 11.1, "rotation": 0, "rectanglelabels": ["cat"]}},
        {"from_name": "tags", "type": "choices", "value": {"choices": ["cat"]}}]}]}

Brush masks are Label Studio's RLE of the image's RGBA pixels, encoded and decoded with
``label_studio_converter.brush`` (Label Studio's own converter). Rectangles are in percent
of the image. The labelling interface these tasks need is written as ``labeling-config.xml``:
the image, its confidence, and five controls: ``tags`` (choices), ``box`` (rectangles),
``scribble`` (brush: the image's scribble, and new strokes), ``pseudo`` (brush: the current
pseudo mask, a pre-annotation to look at, not read back) and ``mask`` (brush: a full mask the
person draws).

What comes back is Label Studio's JSON export: the tasks with their ``annotations``; of each
task the latest annotation that was not skipped is read, and a task nobody annotated is left
as it is.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from wsss_core.data.image_io import read_bytes
from wsss_core.data.sample import Box
from wsss_core.errors import BadInputError
from wsss_core.review import MANUAL, PSEUDO, SCRIBBLE
from wsss_core.review.cvat import image_id_of, read_box
from wsss_core.review.labels import ImageLabels, ReviewFileError, ReviewItem, class_layers, paint_layers

TASK_FILE = "tasks.json"
CONFIG_FILE = "labeling-config.xml"
IMAGE_NAME = "image"
TAGS, BOX = "tags", "box"
BRUSHES = {SCRIBBLE: SCRIBBLE, PSEUDO: PSEUDO, MANUAL: "mask"}  # role -> control name
DEFAULT_IMAGE_URL = "/data/local-files/?d="


def brush_rle(layer: np.ndarray) -> list[int]:
    """A bool mask as Label Studio brush RLE (every RGBA channel 255 inside the mask)."""
    from label_studio_converter.brush import encode_rle

    return [int(v) for v in encode_rle(np.repeat(layer.astype(np.uint8).ravel() * 255, 4))]


def brush_layer(rle: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Label Studio brush RLE as an HxW bool mask (alpha of at least half); ValueError on a misfit."""
    from label_studio_converter.brush import decode_rle

    try:
        pixels = decode_rle([int(v) for v in rle])
    except (ValueError, TypeError, IndexError) as error:
        raise ValueError(f"brush rle does not decode ({error})") from None
    if pixels.size != shape[0] * shape[1] * 4:
        raise ValueError(f"brush rle holds {pixels.size // 4} pixels, the {shape[1]}x{shape[0]} image {shape[0] * shape[1]}")
    return pixels.reshape(shape[0], shape[1], 4)[:, :, 3] >= 128


def labeling_config(classes: list[str]) -> str:
    """The labelling interface of the tasks (Label Studio's XML config)."""
    view = ET.Element("View")
    ET.SubElement(view, "Header", {"value": "confidence $confidence (lowest first: rank $rank)"})
    ET.SubElement(view, "Image", {"name": IMAGE_NAME, "value": "$image", "zoom": "true"})
    choices = ET.SubElement(view, "Choices", {"name": TAGS, "toName": IMAGE_NAME, "choice": "multiple", "showInline": "true"})
    rectangles = ET.SubElement(view, "RectangleLabels", {"name": BOX, "toName": IMAGE_NAME})
    for name in classes[1:]:
        ET.SubElement(choices, "Choice", {"value": name})
        ET.SubElement(rectangles, "Label", {"value": name})
    for control in BRUSHES.values():
        brush = ET.SubElement(view, "BrushLabels", {"name": control, "toName": IMAGE_NAME})
        for name in classes:
            ET.SubElement(brush, "Label", {"value": name})
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def _brush_results(item: ReviewItem, classes: list[str], layers, role: str) -> list[dict]:
    labels = item.labels
    return [
        {
            "id": f"{item.image_id}-{role}-{class_index}",
            "from_name": BRUSHES[role], "to_name": IMAGE_NAME, "type": "brushlabels",
            "original_width": labels.width, "original_height": labels.height, "image_rotation": 0,
            "value": {"format": "rle", "rle": brush_rle(layer), "brushlabels": [classes[class_index]]},
        }
        for class_index, layer in layers
    ]


def task_results(item: ReviewItem, classes: list[str]) -> list[dict]:
    """The prediction results of one image: pseudo mask and scribble per class, boxes, tags."""
    labels = item.labels
    results = _brush_results(item, classes, class_layers(item.pseudo), PSEUDO)
    results += _brush_results(item, classes, class_layers(labels.mask), MANUAL)  # a person's, in place of the pseudo mask
    results += _brush_results(item, classes, class_layers(labels.scribble), SCRIBBLE)
    for n, box in enumerate(labels.boxes):
        results.append({
            "id": f"{item.image_id}-box-{n}", "from_name": BOX, "to_name": IMAGE_NAME, "type": "rectanglelabels",
            "original_width": labels.width, "original_height": labels.height, "image_rotation": 0,
            "value": {
                "x": 100 * box.x0 / labels.width, "y": 100 * box.y0 / labels.height,
                "width": 100 * (box.x1 - box.x0) / labels.width, "height": 100 * (box.y1 - box.y0) / labels.height,
                "rotation": 0, "rectanglelabels": [classes[box.class_index]],
            },
        })
    if labels.tags:
        results.append({
            "id": f"{item.image_id}-tags", "from_name": TAGS, "to_name": IMAGE_NAME, "type": "choices",
            "value": {"choices": [classes[t] for t in labels.tags]},
        })
    return results


def write_label_studio(
    items: list[ReviewItem], classes: list[str], mask_set: str, out_dir: Path, image_url: str | None = None
) -> Path:
    """tasks.json and labeling-config.xml of the items in out_dir; returns the tasks' path.

    image_url: what stands before each image's file (images/<id>.png) in the task; default
    Label Studio's local-files URL (serve out_dir as its local files root), or e.g. the URL
    where out_dir is served."""
    prefix = DEFAULT_IMAGE_URL if image_url is None else image_url
    tasks = []
    for rank, item in enumerate(items, start=1):
        data = {"image": f"{prefix}{item.file_name}", "image_id": item.image_id, "mask_set": mask_set, "rank": rank,
                "confidence": None if item.confidence is None else round(item.confidence, 4)}
        prediction = {"model_version": f"wsss {mask_set}", "result": task_results(item, classes)}
        if item.confidence is not None:
            prediction["score"] = item.confidence
        tasks.append({"data": data, "predictions": [prediction]})
    path = out_dir / TASK_FILE
    path.write_text(json.dumps(tasks) + "\n")
    (out_dir / CONFIG_FILE).write_text(labeling_config(classes))
    return path


# ----------------------------------------------------------------------------------- read


def _task_image_id(task: dict) -> str:
    data = task.get("data") or {}
    if data.get("image_id"):
        return str(data["image_id"])
    return image_id_of(str(data.get(IMAGE_NAME, "")).split("?d=")[-1])


def latest_annotation(task: dict) -> dict | None:
    """The task's latest annotation that was not skipped (None: nobody annotated it)."""
    kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not kept:
        return None
    return max(enumerate(kept), key=lambda pair: (str(pair[1].get("updated_at") or ""), pair[0]))[1]


def _size(result: dict, where: str) -> tuple[int, int]:
    try:
        return int(result["original_height"]), int(result["original_width"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: a {result.get('type')} result without original_width / original_height") from None


def _label(names: list, classes: list[str], where: str) -> int:
    if not isinstance(names, list) or len(names) != 1:
        raise ValueError(f"{where}: expected one label, got {names!r}")
    if names[0] not in classes:
        raise ValueError(f"{where}: unknown label {names[0]!r} (classes: {', '.join(classes)})")
    return classes.index(names[0])


def read_label_studio(path: str | Path, classes: list[str]) -> list[ImageLabels]:
    """The annotated tasks of a Label Studio JSON export as ImageLabels; every problem is
    collected and raised together as one ReviewFileError, a line each."""
    found, problems = parse_label_studio(path, classes)
    if problems:
        raise ReviewFileError(problems)
    return found


def parse_label_studio(path: str | Path, classes: list[str]) -> tuple[list[ImageLabels], list[str]]:
    """read_label_studio's images and its problems, a line each (an image with a problem is kept,
    less the result at fault)."""
    path = Path(path)
    try:
        tasks = json.loads(read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(path, f"cannot parse JSON: {error}") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise BadInputError(path, "not a Label Studio JSON export (a list of tasks)")
    problems: list[str] = []
    found: list[ImageLabels] = []
    for task in tasks:
        annotation = latest_annotation(task)
        if annotation is None:
            continue
        image_id = _task_image_id(task)
        where = f"{path.name}: image {image_id!r}"
        shape: tuple[int, int] | None = None
        layers: dict[str, list[tuple[int, np.ndarray]]] = {role: [] for role in BRUSHES}
        roles = {control: role for role, control in BRUSHES.items()}
        raw_boxes: list[tuple[int, dict]] = []
        tags: set[int] = set()
        for result in annotation.get("result") or []:
            kind, control, value = result.get("type"), result.get("from_name"), result.get("value") or {}
            try:
                if kind in ("brushlabels", "rectanglelabels"):
                    size = _size(result, where)
                    if shape is not None and size != shape:
                        raise ValueError(f"results for a {size[1]}x{size[0]} and a {shape[1]}x{shape[0]} image")
                    shape = size
                if kind == "brushlabels":
                    if control not in roles:
                        raise ValueError(f"brush control {control!r} is none of {', '.join(BRUSHES.values())}")
                    index = _label(value.get("brushlabels"), classes, where)
                    if roles[control] == PSEUDO:
                        continue  # the pre-annotation: there to look at
                    if value.get("format", "rle") != "rle":
                        raise ValueError(f"brush format {value.get('format')!r} is not rle")
                    layers[roles[control]].append((index, brush_layer(value.get("rle") or [], shape)))
                elif kind == "rectanglelabels":
                    index = _label(value.get("rectanglelabels"), classes, where)
                    if float(value.get("rotation") or 0) != 0:
                        raise ValueError("a rotated rectangle (boxes are axis-aligned)")
                    raw_boxes.append((index, value))
                elif kind == "choices":
                    for name in value.get("choices") or []:
                        tags.add(_label([name], classes, where))
                else:
                    raise ValueError(f"{kind!r} results are not read (brush labels, rectangles and choices are)")
            except ValueError as error:
                message = str(error)
                problems.append(message if message.startswith(where) else f"{where}: {message}")
        if shape is None:  # only choices (or nothing): the size does not matter, nothing is painted
            shape = (0, 0)
        boxes: list[Box] = []
        for index, value in raw_boxes:
            try:
                if index == 0:
                    raise ValueError(f"a box of {classes[0]!r}: boxes are of object classes")
                h, w = shape
                x, y = float(value["x"]) * w / 100, float(value["y"]) * h / 100
                boxes.append(read_box(index, x, y, x + float(value["width"]) * w / 100, y + float(value["height"]) * h / 100, shape))
            except (KeyError, TypeError, ValueError) as error:
                problems.append(f"{where}: rectangle: {error}")
        if 0 in tags:
            problems.append(f"{where}: tag {classes[0]!r}: tags are of object classes")
        scribble = paint_layers(layers[SCRIBBLE], shape) if layers[SCRIBBLE] else None
        mask = paint_layers(layers[MANUAL], shape, fill=0) if layers[MANUAL] else None
        found.append(ImageLabels(image_id, shape[0], shape[1], scribble, boxes, sorted(tags - {0}), mask))
    return found, problems
