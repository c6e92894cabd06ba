"""`wsss review import`: the corrected annotations become files of the dataset, in its own layout.

For each image of the tool's file, what differs from the dataset as it is now is written:

- the scribble -> ``scribbles/<id>.png`` (an index PNG, 255 unlabelled; where the image had a
  ScribbleSup ``.xml``, the new ``.png`` beside it is what the reader takes);
- the boxes or the tags -> ``Annotations/<id>.xml`` (VOC): objects whose box is kept stay as they
  were, the others go, new boxes are added, and a tag without a box is an object without a
  ``<bndbox>`` (the reader takes it as a tag);
- a full mask a person drew -> ``SegmentationClassManual/<id>.png``, the image's manual mask
  (wsss_core.manual): every later stage, export and round uses it in place of the image's
  pseudo masks; it is never taken as GT, so no result is scored against a person's own mask.

Everything is read and checked first (labels, sizes, images in the dataset); one problem
anywhere and nothing is written (ReviewFileError, a line per problem). Each file is written
to a temporary file beside it and moved into place (os.replace), so a reader never sees half
a file. The next ingest finds exactly these files changed (their fingerprints) and every stage
recomputes exactly those images (docs/changing-data.md).
"""

from __future__ import annotations

import io
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.data.image_io import ReadOptions, file_present, read_xml, voc_palette
from wsss_core.data.sample import IGNORE_INDEX, Box, Sample
from wsss_core.data.voc import ANNOTATION_DIR, VocReader, checked_file_in, voc_box
from wsss_core.errors import UsageError, WorkspaceError, WsssError
from wsss_core.review import FORMATS
from wsss_core.review.labels import ImageLabels, ReviewFileError, box_key, same_scribble
from wsss_core.store import Workspace


@dataclass
class ImageChange:
    image_id: str
    parts: list[str]  # what changed: scribble, boxes, tags, mask
    files: dict[Path, bytes] = field(default_factory=dict)  # path -> new content


@dataclass
class ImportReport:
    source: Path
    images: int  # annotated images in the file
    changes: list[ImageChange]

    @property
    def written(self) -> list[Path]:
        return [path for change in self.changes for path in change.files]

    def line(self) -> str:
        changed = "; ".join(f"{c.image_id}: {', '.join(c.parts)}" for c in self.changes)
        text = (f"review import: {self.images} images in {self.source.name}, {len(self.changes)} changed"
                + (f" ({changed})" if changed else "") + f", {self.images - len(self.changes)} unchanged")
        if self.changes:
            text += f"; wrote {len(self.written)} files: the next `wsss run` (or `wsss ingest`) recomputes those images"
        return text


def png_bytes(label_map: np.ndarray) -> bytes:
    """A class map as a palette PNG (as save_palette_png writes it)."""
    image = Image.fromarray(np.asarray(label_map, dtype=np.uint8), mode="P")
    image.putpalette(voc_palette().ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a temporary file beside it, then os.replace; the file's
    mode is kept (0644 for a new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _object(root: ET.Element, name: str, box: Box | None, shape: tuple[int, int]) -> None:
    obj = ET.SubElement(root, "object")
    _sub(obj, "name", name)
    _sub(obj, "pose", "Unspecified")
    if box is not None:
        height, width = shape
        _sub(obj, "truncated", str(int(box.x0 == 0 or box.y0 == 0 or box.x1 == width or box.y1 == height)))
    _sub(obj, "difficult", "0")
    if box is not None:
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", box.x0 + 1), ("ymin", box.y0 + 1), ("xmax", box.x1), ("ymax", box.y1)):  # VOC: 1-based, inclusive
            _sub(bndbox, tag, str(value))


def annotation_xml(
    existing: Path | None, image_id: str, shape: tuple[int, int], boxes: list[Box], tags: list[int], classes: list[str]
) -> bytes:
    """The image's VOC annotation with these boxes and tags; the rest of an existing file (and its
    objects whose box is kept, with their pose, truncated, difficult and parts) stays."""
    if existing is not None:
        root = read_xml(existing)
    else:
        root = ET.Element("annotation")
        _sub(root, "filename", f"{image_id}.jpg")
        size = ET.SubElement(root, "size")
        for tag, value in (("width", shape[1]), ("height", shape[0]), ("depth", 3)):
            _sub(size, tag, str(value))
    wanted = [box_key(b) for b in boxes]
    for obj in list(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        bndbox = obj.find("bndbox")
        if bndbox is not None and name in classes and existing is not None:
            key = box_key(voc_box(existing, bndbox, classes.index(name), shape)[0])
            if key in wanted:
                wanted.remove(key)
                continue
        root.remove(obj)
    for key in wanted:
        _object(root, classes[key[0]], Box(*key), shape)
    boxed = {b.class_index for b in boxes}
    for tag in tags:
        if tag not in boxed:
            _object(root, classes[tag], None, shape)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def image_changes(reader: VocReader, labels: ImageLabels, sample: Sample, classes: list[str]) -> ImageChange:
    """What of one image differs between the tool's labels and the dataset, with the new files."""
    image_id, shape = labels.image_id, sample.image.shape[:2]
    change = ImageChange(image_id, [])
    if not same_scribble(labels.scribble, sample.scribble):
        change.parts.append("scribble")
        scribble = labels.scribble if labels.scribble is not None else np.full(shape, IGNORE_INDEX, np.uint8)
        change.files[checked_file_in(reader.scribbles_dir, image_id, ".png", reader.root)] = png_bytes(scribble)
    boxes_changed = sorted(map(box_key, labels.boxes)) != sorted(map(box_key, sample.boxes))
    tags = sorted(set(labels.tags) | {b.class_index for b in labels.boxes})
    tags_changed = tags != sorted(sample.tags)
    if boxes_changed:
        change.parts.append("boxes")
    if tags_changed:
        change.parts.append("tags")
    if boxes_changed or tags_changed:
        path = checked_file_in(reader.root / ANNOTATION_DIR, image_id, ".xml", reader.root)
        existing = path if file_present(path, "an annotation file") else None
        change.files[path] = annotation_xml(existing, image_id, shape, labels.boxes, tags, classes)
    if labels.mask is not None and (sample.manual is None or not np.array_equal(labels.mask, sample.manual)):
        change.parts.append("mask")
        change.files[reader.manual_path(image_id)] = png_bytes(labels.mask)
    return change


def parse_review_file(path: Path, format: str, classes: list[str], stroke_width: int) -> tuple[list[ImageLabels], list[str]]:
    """The images of a tool's file and the problems found reading it, a line each."""
    from wsss_core.review import cvat, label_studio

    if format == "cvat":
        return cvat.parse_cvat(path, classes, stroke_width)
    if format == "label-studio":
        return label_studio.parse_label_studio(path, classes)
    raise UsageError(f"unknown review format {format!r} (formats: {', '.join(FORMATS)})")


def open_dataset(ws: Workspace, root: str | Path, scribbles_dir: str | Path | None, options: ReadOptions) -> VocReader:
    """The workspace's VOC-layout dataset at root (refused: another format, root or class list)."""
    dataset = ws.dataset
    if dataset.get("format", "voc") != "voc":
        raise UsageError(f"{ws.path}: review import writes VOC-layout datasets; this one is {dataset.get('format')}")
    reader = VocReader(root, scribbles_dir=scribbles_dir, options=options)
    recorded = dataset.get("root")
    if recorded and Path(recorded).resolve() != reader.root:
        raise WorkspaceError(f"{ws.path}: ingested from {recorded}, not {reader.root}")
    if reader.classes != ws.classes:
        raise WorkspaceError(f"{reader.root}: its class list differs from the workspace's (ingest it into a new --workspace)")
    return reader


def import_review(
    workspace: str | Path | Workspace,
    root: str | Path,
    path: str | Path,
    format: str,
    scribbles_dir: str | Path | None = None,
    options: ReadOptions = ReadOptions(),
) -> ImportReport:
    """Write the corrections of a tool's export into the dataset at root (see the module docstring)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not ws.exists():
        raise WorkspaceError(f"{ws.path}: no workspace here (run `wsss ingest` first)")
    path = Path(path)
    reader = open_dataset(ws, root, scribbles_dir, options)
    classes = ws.classes
    if format not in FORMATS:
        raise UsageError(f"unknown review format {format!r} (formats: {', '.join(FORMATS)})")
    annotated, problems = parse_review_file(path, format, classes, options.scribble_stroke_width)
    in_dataset = set(ws.image_ids())
    changes: list[ImageChange] = []
    seen: set[str] = set()
    for labels in annotated:
        where = f"{path.name}: image {labels.image_id!r}"
        if labels.image_id in seen:
            problems.append(f"{where}: annotated twice in the file")
            continue
        seen.add(labels.image_id)
        if labels.image_id not in in_dataset:
            problems.append(f"{where}: not an image of the dataset (its split lists, as last ingested)")
            continue
        try:
            sample = reader.load(labels.image_id)
        except WsssError as error:
            problems.append(f"{where}: the dataset's files do not read: {error}")
            continue
        height, width = sample.image.shape[:2]
        if labels.height and (labels.height, labels.width) != (height, width):
            problems.append(f"{where}: annotated as {labels.width}x{labels.height}, the image is {width}x{height}")
            continue
        try:
            change = image_changes(reader, labels, sample, classes)
        except WsssError as error:
            problems.append(f"{where}: {error}")
            continue
        if change.parts:
            changes.append(change)
    if problems:
        raise ReviewFileError(problems)
    for change in changes:
        for target, data in change.files.items():
            write_atomic(target, data)
    return ImportReport(path, len(annotated), changes)
