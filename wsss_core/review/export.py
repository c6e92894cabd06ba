"""`wsss review export`: which images to review, and what each carries to the labelling tool."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.confidence import DEFAULT_MEASURE, has_scores, read_confidence, worst
from wsss_core.errors import UsageError, WorkspaceError
from wsss_core.export import check_class_mask, exportable_stages
from wsss_core.manual import MANUAL, manual_ids
from wsss_core.registries import mask_method_of_stage
from wsss_core.review import FORMATS
from wsss_core.review.labels import ImageLabels, ReviewItem, boxes_from_array
from wsss_core.store import Workspace

IMAGE_DIR = "images"
MANIFEST = "review.json"
DEFAULT_WORST = 10


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    task_file: Path  # what the tool imports: annotations.xml (CVAT) or tasks.json (Label Studio)
    image_ids: list[str]  # in review order
    confidence: dict[str, float | None]

    def line(self, mask_set: str, format: str) -> str:
        scores = [v for v in self.confidence.values() if v is not None]
        span = f", confidence {min(scores):.2f}..{max(scores):.2f}" if scores else ""
        return f"review export: {len(self.image_ids)} images of {mask_set}{span} -> {self.task_file} ({format})"


def check_mask_set(workspace: Workspace, mask_set: str) -> None:
    """A pseudo-mask stage of the workspace (pseudo/<method>[-crf][/round-k]), else a one-line error."""
    sets = [s for s in exportable_stages(workspace) if s.startswith("pseudo/")]
    if mask_method_of_stage(mask_set) is None or workspace.stage_meta(mask_set) is None:
        listed = ", ".join(sets) if sets else "none yet: run a path first"
        raise WorkspaceError(f"{workspace.path}: no mask set {mask_set!r} (mask sets: {listed})")


def select_images(
    workspace: Workspace, mask_set: str, worst_n: int | None = None, ids: list[str] | None = None
) -> tuple[list[str], dict[str, float | None]]:
    """The images to review, in order, and the confidence of each (None: no score).

    worst_n: the n least-confident images of the mask set (wsss_core.confidence.worst, the
    order `wsss status --worst` lists), among the images the dataset lists now that have no
    manual mask (a person drew those: nothing is left to review).
    ids: these images, in the order given. One of the two.
    """
    if (worst_n is None) == (ids is None):
        raise UsageError("name the images with --ids or ask for the --worst K, not both")
    check_mask_set(workspace, mask_set)
    in_dataset = set(workspace.image_ids())
    done = workspace.done_ids(mask_set) & in_dataset
    if ids is not None:
        ids = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
        unknown = [i for i in ids if i not in in_dataset]
        if unknown:
            raise UsageError(f"not images of the dataset: {', '.join(unknown)}")
        missing = [i for i in ids if i not in done]
        if missing:
            raise WorkspaceError(f"{mask_set}: no mask yet for {', '.join(missing)} (run its path first)")
        if not ids:
            raise UsageError("--ids names no image")
        return ids, read_confidence(workspace, mask_set, image_ids=ids)
    if not done:
        raise WorkspaceError(f"{mask_set}: no image has a mask yet (run its path first)")
    scores = read_confidence(workspace, mask_set)  # what `wsss status` reads: the done images of the dataset
    for image_id in manual_ids(workspace, list(scores)):
        del scores[image_id]
    if not has_scores(scores):
        raise WorkspaceError(
            f"{mask_set}: no confidence stored (a baseline without class probabilities, or masks written "
            "before scores were); name the images with --ids"
        )
    chosen = worst(scores, worst_n or 0)
    return [image_id for image_id, _ in chosen], {image_id: value for image_id, value in chosen}


def review_item(workspace: Workspace, mask_set: str, image_id: str, confidence: float | None) -> ReviewItem:
    """One image as the workspace holds it: image, weak labels, current pseudo mask; where a person
    drew the image's full mask (wsss_core.manual), that mask in place of the pseudo mask."""
    image = workspace.read_array("images", image_id)
    height, width = image.shape[:2]
    manual = check_class_mask(MANUAL, image_id, workspace.read_array(MANUAL, image_id), image.shape) \
        if workspace.has_array(MANUAL, image_id) else None
    pseudo = check_class_mask(mask_set, image_id, workspace.read_array(mask_set, image_id), image.shape) \
        if manual is None else None
    scribble = workspace.read_array("scribbles", image_id) if workspace.has_array("scribbles", image_id) else None
    boxes = boxes_from_array(workspace.read_array("boxes", image_id)) if workspace.has_array("boxes", image_id) else []
    tags = [int(t) for t in workspace.read_array("tags", image_id)] if workspace.has_array("tags", image_id) else []
    labels = ImageLabels(image_id, height, width, scribble=scribble, boxes=boxes, tags=sorted(tags), mask=manual)
    return ReviewItem(labels, image, pseudo, confidence, f"{IMAGE_DIR}/{image_id}.png")


def export_review(
    workspace: str | Path | Workspace,
    mask_set: str,
    out_dir: str | Path,
    format: str,
    worst_n: int | None = None,
    ids: list[str] | None = None,
    image_url: str | None = None,
) -> ExportResult:
    """Write the review task set of the chosen images to out_dir: the images (PNG, as ingested, so
    the masks line up with them), the task file of the format, and review.json (the order and
    the confidence of each image). image_url: Label Studio's prefix for the image files."""
    from wsss_core.review import cvat, label_studio

    if format not in FORMATS:
        raise UsageError(f"unknown review format {format!r} (formats: {', '.join(FORMATS)})")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not ws.exists():
        raise WorkspaceError(f"{ws.path}: no workspace here (run `wsss ingest` first)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder")
    chosen, scores = select_images(ws, mask_set, worst_n, ids)
    items = [review_item(ws, mask_set, image_id, scores.get(image_id)) for image_id in chosen]
    classes = ws.classes
    (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for item in items:
        Image.fromarray(np.ascontiguousarray(item.image)).save(out_dir / item.file_name)
    if format == "cvat":
        task_file = cvat.write_cvat(items, classes, mask_set, out_dir)
    else:
        task_file = label_studio.write_label_studio(items, classes, mask_set, out_dir, image_url)
    manifest = {
        "mask_set": mask_set,
        "format": format,
        "measure": DEFAULT_MEASURE,
        "task_file": task_file.name,
        "images": [{"rank": rank, "id": item.image_id, "file": item.file_name, "confidence": item.confidence}
                   for rank, item in enumerate(items, start=1)],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportResult(out_dir, task_file, chosen, {item.image_id: item.confidence for item in items})
