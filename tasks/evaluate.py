"""Evaluation tasks: confusion matrices of mask stages against GT per split, and one MLflow run
per (mask stage, split) with its scores, confusion-matrix plot and overlay grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from wsss_core.metrics import ConfusionMatrix
from wsss_core.plots import OverlayRow, confusion_figure, overlay_grid, overlay_mask
from wsss_core.registries import CRF_SUFFIX, mask_method_of_stage, mask_round_of_stage, round_zero_stage
from wsss_core.report import weak_label_panel
from wsss_core.store import Workspace
from wsss_core.tracking import METRIC_UNIT, Tracking, mask_metrics, open_run

OVERLAY_IMAGES = 4  # images per overlay grid

# A confusion matrix of a stage over some images: (stage, split); split None = every image given.
Scores = dict[tuple[str, str | None], ConfusionMatrix]


@task(name="evaluate-batch", retries=2, retry_delay_seconds=2, persist_result=False)
def evaluate_batch(
    workspace: Workspace, stages: list[str], image_ids: list[str], splits: Mapping[str, Sequence[str]] | None = None
) -> Scores:
    """Confusion matrices per (stage, None) over the batch and per (stage, split) over its
    images in each split (splits: image id -> its splits). Images without GT or without a
    finished mask for a stage are left out of that stage."""
    num_classes = len(workspace.classes)
    splits = splits or {}
    names = sorted({s for found in splits.values() for s in found})
    scores: Scores = {(stage, split): ConfusionMatrix(num_classes) for stage in stages for split in [None, *names]}
    done = {stage: workspace.done_ids(stage) for stage in stages}
    for image_id in image_ids:
        if not workspace.has_array("gt", image_id):
            continue
        gt = workspace.read_array("gt", image_id)
        for stage in stages:
            if image_id in done[stage]:
                mask = workspace.read_array(stage, image_id)
                for split in [None, *splits.get(image_id, ())]:
                    scores[(stage, split)].update(mask, gt)
    return scores


def evaluation_params(stage: str, split: str, settings: Mapping[str, Any], images: int) -> dict[str, Any]:
    """The params of a (mask stage, split) run: the settings that made the masks, then what was
    scored: stage, method, round, split, supervision, crf and the number of images."""
    found = mask_method_of_stage(stage)
    method, entry = found if found else (stage, None)
    return {
        **settings,
        "stage": stage, "method": method, "round": mask_round_of_stage(stage) or 0, "split": split,
        "supervision": entry.supervision if entry else "unknown", "crf": round_zero_stage(stage).endswith(CRF_SUFFIX),
        "n_images": images,
    }


@task(name="log-evaluation", persist_result=False)
def log_evaluation_run(
    workspace: Workspace,
    tracking: Tracking,
    stage: str,
    split: str,
    scores: dict[str, Any],
    settings: Mapping[str, Any],
    report: str,
    image_ids: list[str],
) -> str:
    """One nested MLflow run for a mask stage on a split; returns its id.

    scores: ConfusionMatrix.to_dict(); metrics `miou`, `iou/<class>`, `pixel_accuracy` in
    percent. Artifacts: the evaluation report, confusion.png and overlays.png (the first
    OVERLAY_IMAGES images of image_ids with GT and this stage's mask).
    """
    classes = workspace.classes
    name = f"{stage} {split}"
    params = evaluation_params(stage, split, settings, int(scores["images"]))
    tags = {"kind": "evaluation", "metric_unit": METRIC_UNIT, "mask_stage_key": workspace.stage_key(stage) or ""}
    with open_run(tracking, name, params, tags) as run:
        run.log_metrics(mask_metrics(scores["iou"], scores["miou"] if scores["miou"] is not None else float("nan"),
                                     classes, scores["pixel_accuracy"]))
        run.log_artifact(Path(report), "report")
        run.log_figure(confusion_figure(np.asarray(scores["matrix"]), classes, title=name), "confusion.png")
        rows = overlay_rows(workspace, stage, image_ids, OVERLAY_IMAGES)
        if rows:
            run.log_figure(overlay_grid(rows, title=name), "overlays.png")
        return run.run_id


def overlay_rows(workspace: Workspace, stage: str, image_ids: Sequence[str], limit: int) -> list[OverlayRow]:
    """image | GT | weak labels | pseudo mask (the round the stage started from) | prediction
    (the stage itself, when it is a segmentation round) for the first images that have GT
    and a finished mask of the stage."""
    done = workspace.done_ids(stage)
    chosen = [i for i in image_ids if i in done and workspace.has_array("gt", i)][:limit]
    found = mask_method_of_stage(stage)
    supervision = found[1].supervision if found else None
    pseudo = round_zero_stage(stage)
    pseudo_done = workspace.done_ids(pseudo) if pseudo != stage else done
    rows = []
    for image_id in chosen:
        image = workspace.read_array("images", image_id)
        weak, note = weak_label_panel(workspace, image_id, image, supervision)
        panels: dict[str, np.ndarray | None] = {
            "image": image,
            "ground truth": overlay_mask(image, workspace.read_array("gt", image_id)),
            "weak labels": weak,
            f"pseudo mask ({pseudo.removeprefix('pseudo/')})": (
                overlay_mask(image, workspace.read_array(pseudo, image_id)) if image_id in pseudo_done else None
            ),
        }
        if pseudo != stage:
            panels[f"prediction (round {mask_round_of_stage(stage)})"] = overlay_mask(image, workspace.read_array(stage, image_id))
        rows.append(OverlayRow(image_id, panels, note))
    return rows
