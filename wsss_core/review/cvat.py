"""CVAT for images 1.1 XML: a review task set out, the corrected annotations back.

The documented structure (CVAT's "XML annotation format", version 1.1)::

    <annotations>
      <version>1.1</version>
      <meta><task>... <labels><label><name>cat</name><type>any</type><attributes>...</attributes>
      </label>...</labels></task></meta>
      <image id="0" name="images/a.png" width="96" height="72">
        <mask label="cat" source="auto" occluded="0" rle="3, 5, 7" left="10" top="4" width="5" height="3" z_order="0">
          <attribute name="role">pseudo</attribute>
        </mask>
        <box label="cat" source="manual" occluded="0" xtl="10.00" ytl="4.00" xbr="15.00" ybr="7.00" z_order="0"/>
        <polyline label="cat" source="manual" occluded="0" points="x0,y0;x1,y1" z_order="1"/>
        <tag label="cat" source="manual"/>
      </image>
    </annotations>

A mask's ``rle`` holds the run lengths of its ``width`` x ``height`` box (row by row, from
``left``, ``top``), alternately outside and inside the mask, starting outside. Image ids are
the index of the image names in lexical order.

What wsss writes and reads back: per class one ``mask`` of role ``pseudo`` (the current pseudo
mask, with its confidence; read back as nothing: it is there to look at) and one of role
``scribble`` (the image's scribble, as brush strokes); each box a ``box``; each tag a
``tag``. Read back too: a ``polyline`` is a new scribble stroke (drawn as wide as ScribbleSup
strokes are rasterised), a ``mask`` of role ``manual`` (the default role of anything drawn in
CVAT) or a ``polygon`` is part of a full mask the person drew. The labels and their two
attributes (``role``, ``confidence``) are also written as ``cvat-labels.json``, the JSON
CVAT's label constructor ("Raw") takes when the task is made.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
from skimage.draw import polygon as polygon_pixels

from wsss_core.data.image_io import read_bytes
from wsss_core.data.sample import Box
from wsss_core.data.scribbles import Stroke, rasterise_strokes
from wsss_core.errors import BadInputError
from wsss_core.review import MANUAL, PSEUDO, ROLES, SCRIBBLE
from wsss_core.review.labels import ImageLabels, ReviewFileError, ReviewItem, class_layers, paint_layers

TASK_FILE = "annotations.xml"
LABELS_FILE = "cvat-labels.json"
ROLE, CONFIDENCE = "role", "confidence"
SHAPES = ("mask", "box", "polyline", "polygon", "tag")


# ------------------------------------------------------------------------------------ RLE


def encode_mask(layer: np.ndarray) -> tuple[str, int, int, int, int] | None:
    """(rle, left, top, width, height) of a bool mask in CVAT's form; None when it is empty."""
    rows, cols = np.flatnonzero(layer.any(axis=1)), np.flatnonzero(layer.any(axis=0))
    if not len(rows):
        return None
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    crop = layer[top : top + height, left : left + width].ravel()
    bounds = np.concatenate([[0], np.flatnonzero(crop[1:] != crop[:-1]) + 1, [crop.size]])
    counts = np.diff(bounds).tolist()
    if crop[0]:
        counts = [0, *counts]  # the runs start outside the mask
    return ", ".join(str(c) for c in counts), left, top, width, height


def decode_mask(rle: str, left: int, top: int, width: int, height: int, shape: tuple[int, int]) -> np.ndarray:
    """A CVAT mask as an HxW bool array of the image; ValueError says what does not fit."""
    try:
        counts = [int(float(v)) for v in rle.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"rle is not a list of numbers: {rle[:40]!r}") from None
    if any(c < 0 for c in counts):
        raise ValueError("rle has a negative run")
    if width <= 0 or height <= 0 or sum(counts) != width * height:
        raise ValueError(f"rle covers {sum(counts)} pixels, its {width}x{height} box {width * height}")
    if left < 0 or top < 0 or left + width > shape[1] or top + height > shape[0]:
        raise ValueError(f"mask box {width}x{height} at ({left}, {top}) leaves the {shape[1]}x{shape[0]} image")
    inside = np.repeat(np.arange(len(counts)) % 2 == 1, counts).reshape(height, width)
    layer = np.zeros(shape, dtype=bool)
    layer[top : top + height, left : left + width] = inside
    return layer


# ---------------------------------------------------------------------------------- write


def label_spec(classes: list[str]) -> list[dict]:
    """The task's labels as CVAT's raw label constructor takes them: every class, with the role
    attribute (manual by default, so that what a person draws is theirs) and the confidence."""
    role = {"name": ROLE, "mutable": False, "input_type": "select", "default_value": MANUAL, "values": list(ROLES)}
    confidence = {"name": CONFIDENCE, "mutable": False, "input_type": "text", "default_value": "", "values": [""]}
    return [{"name": name, "type": "any", "attributes": [role, confidence]} for name in classes]


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _meta(root: ET.Element, classes: list[str], name: str, size: int) -> None:
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for tag, text in (("name", name), ("size", str(size)), ("mode", "annotation"), ("overlap", "0"), ("flipped", "False")):
        _text(task, tag, text)
    labels = ET.SubElement(task, "labels")
    for spec in label_spec(classes):
        label = ET.SubElement(labels, "label")
        _text(label, "name", spec["name"])
        _text(label, "type", spec["type"])
        attributes = ET.SubElement(label, "attributes")
        for attribute in spec["attributes"]:
            element = ET.SubElement(attributes, "attribute")
            for key in ("name", "mutable", "input_type", "default_value"):
                _text(element, key, str(attribute[key]))
            _text(element, "values", "\n".join(attribute["values"]))


def _mask_element(image: ET.Element, label: str, layer: np.ndarray, role: str, z_order: int, confidence: float | None) -> None:
    encoded = encode_mask(layer)
    if encoded is None:
        return
    rle, left, top, width, height = encoded
    source = "auto" if role == PSEUDO else "manual"
    element = ET.SubElement(image, "mask", {
        "label": label, "source": source, "occluded": "0", "rle": rle, "left": str(left), "top": str(top),
        "width": str(width), "height": str(height), "z_order": str(z_order),
    })
    _text(element, "attribute", role).set("name", ROLE)
    if confidence is not None:
        _text(element, "attribute", f"{confidence:.4f}").set("name", CONFIDENCE)


def write_cvat(items: list[ReviewItem], classes: list[str], mask_set: str, out_dir: Path) -> Path:
    """annotations.xml (and cvat-labels.json) of the items in out_dir; returns the XML's path."""
    root = ET.Element("annotations")
    _text(root, "version", "1.1")
    _meta(root, classes, f"wsss review: {mask_set}, {len(items)} images", len(items))
    for index, item in enumerate(sorted(items, key=lambda i: i.file_name)):  # ids: lexical order of names
        labels = item.labels
        image = ET.SubElement(root, "image", {
            "id": str(index), "name": item.file_name, "width": str(labels.width), "height": str(labels.height),
        })
        for class_index, layer in class_layers(item.pseudo):
            _mask_element(image, classes[class_index], layer, PSEUDO, 0, item.confidence)
        for class_index, layer in class_layers(labels.mask):  # a person's mask, in place of the pseudo mask
            _mask_element(image, classes[class_index], layer, MANUAL, 0, None)
        for class_index, layer in class_layers(labels.scribble):
            _mask_element(image, classes[class_index], layer, SCRIBBLE, 1, None)
        for box in labels.boxes:
            ET.SubElement(image, "box", {
                "label": classes[box.class_index], "source": "manual", "occluded": "0", "xtl": f"{box.x0:.2f}",
                "ytl": f"{box.y0:.2f}", "xbr": f"{box.x1:.2f}", "ybr": f"{box.y1:.2f}", "z_order": "2",
            })
        for tag in labels.tags:
            ET.SubElement(image, "tag", {"label": classes[tag], "source": "manual"})
    ET.indent(root)
    path = out_dir / TASK_FILE
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    (out_dir / LABELS_FILE).write_text(json.dumps(label_spec(classes), indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------------- read


def image_id_of(name: str) -> str:
    """The image id a task's image name stands for: its file stem (images/a.png -> a)."""
    return Path(name.replace("\\", "/").split("/")[-1]).stem


def _xml_root(path: Path) -> ET.Element:
    """The annotations of an XML file, or of the annotations.xml in a CVAT export zip."""
    data = read_bytes(path)
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == TASK_FILE]
            if not names:
                raise BadInputError(path, f"a zip without {TASK_FILE} (is it a CVAT for images 1.1 export?)")
            data = archive.read(names[0])
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise BadInputError(path, f"cannot parse XML: {error}") from None
    if root.tag != "annotations" or root.find("image") is None and root.find("track") is not None:
        raise BadInputError(path, "not a CVAT for images 1.1 file (<annotations> with <image> elements)")
    return root


def _attribute(element: ET.Element, name: str) -> str | None:
    for child in element.findall("attribute"):
        if child.get("name") == name:
            return (child.text or "").strip()
    return None


def _number(element: ET.Element, name: str) -> float:
    value = element.get(name)
    if value is None:
        raise ValueError(f"<{element.tag}> lacks {name}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"<{element.tag}> {name}={value!r} is not a number") from None


def _points(element: ET.Element) -> np.ndarray:
    try:
        pairs = [tuple(float(v) for v in point.split(",")) for point in (element.get("points") or "").split(";") if point.strip()]
    except ValueError:
        raise ValueError(f"<{element.tag}> points {element.get('points')!r} are not x,y;x,y") from None
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(f"<{element.tag}> points {element.get('points')!r} are not x,y;x,y")
    return np.rint(np.asarray(pairs)).astype(np.int64)


def read_box(label: int, xtl: float, ytl: float, xbr: float, ybr: float, shape: tuple[int, int]) -> Box:
    """A box in continuous pixel coordinates (x1/y1 exclusive), clipped to the image."""
    height, width = shape
    x0, y0, x1, y1 = (int(round(v)) for v in (xtl, ytl, xbr, ybr))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"box ({xtl:g}, {ytl:g}, {xbr:g}, {ybr:g}) is empty inside the {width}x{height} image")
    return Box(label, x0, y0, x1, y1)


def read_cvat(path: str | Path, classes: list[str], stroke_width: int) -> list[ImageLabels]:
    """Every image of a CVAT for images 1.1 file as ImageLabels (class indices of classes).

    All problems (unknown labels, shapes outside the image, bad numbers) are collected and
    raised together as one ReviewFileError, a line each.
    """
    found, problems = parse_cvat(path, classes, stroke_width)
    if problems:
        raise ReviewFileError(problems)
    return found


def parse_cvat(path: str | Path, classes: list[str], stroke_width: int) -> tuple[list[ImageLabels], list[str]]:
    """read_cvat's images and its problems, a line each (an image with a problem is kept, less the
    shape at fault, so that the caller can check the rest of it too)."""
    path = Path(path)
    root = _xml_root(path)
    problems: list[str] = []
    found: list[ImageLabels] = []
    for image in root.findall("image"):
        name = image.get("name") or ""
        where = f"{path.name}: image {name!r}"
        try:
            shape = (int(_number(image, "height")), int(_number(image, "width")))
        except ValueError as error:
            problems.append(f"{where}: {error}")
            continue
        scribble_layers, manual_layers, strokes = [], [], []
        boxes, tags = [], set()
        for element in image:
            if element.tag == "attribute":
                continue
            if element.tag not in SHAPES:
                problems.append(f"{where}: <{element.tag}> shapes are not read (masks, polylines, polygons, boxes and tags are)")
                continue
            label = element.get("label")
            if label not in classes:
                problems.append(f"{where}: unknown label {label!r} (classes: {', '.join(classes)})")
                continue
            index = classes.index(label)
            role = _attribute(element, ROLE) or MANUAL
            try:
                if element.tag == "mask":
                    if role not in ROLES:
                        raise ValueError(f"mask role {role!r} is none of {', '.join(ROLES)}")
                    if role == PSEUDO:
                        continue  # the pre-annotation: there to look at
                    layer = decode_mask(
                        element.get("rle") or "", *(int(_number(element, k)) for k in ("left", "top", "width", "height")), shape
                    )
                    (scribble_layers if role == SCRIBBLE else manual_layers).append((index, layer))
                elif element.tag == "polygon":
                    if role == PSEUDO:
                        continue
                    points = _points(element)
                    layer = np.zeros(shape, dtype=bool)
                    layer[polygon_pixels(points[:, 1], points[:, 0], shape)] = True
                    manual_layers.append((index, layer))
                elif element.tag == "polyline":
                    strokes.append(Stroke(index, _points(element)))
                elif index == 0:
                    raise ValueError("boxes and tags are of object classes")
                elif element.tag == "box":
                    boxes.append(read_box(index, *(_number(element, k) for k in ("xtl", "ytl", "xbr", "ybr")), shape))
                else:
                    tags.add(index)
            except ValueError as error:
                problems.append(f"{where}: {label} {element.tag}: {error}")
        scribble = None
        if scribble_layers or strokes:
            scribble = paint_layers(scribble_layers, shape)
            if strokes:
                drawn = rasterise_strokes(strokes, shape, stroke_width)
                scribble = np.where(drawn != 255, drawn, scribble).astype(np.uint8)
        mask = paint_layers(manual_layers, shape, fill=0) if manual_layers else None
        found.append(ImageLabels(image_id_of(name), shape[0], shape[1], scribble, boxes, sorted(tags), mask))
    return found, problems
