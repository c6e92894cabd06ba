"""Export a stage's class masks as palette PNGs named <image id>.png."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from wsss_core.data.image_io import save_palette_png
from wsss_core.errors import UsageError, WorkspaceError
from wsss_core.manual import MANUAL
from wsss_core.registries import mask_method_of_stage
from wsss_core.store import Workspace

# Arrays written by ingest rather than by a stage of their own.
INGESTED_MASKS = ("gt", "scribbles", MANUAL)


def is_mask_stage(stage: str) -> bool:
    """gt, scribbles, manual and pseudo/<method>[-crf] hold class masks; superpixels, graphs, cams, seeds
    and the rest hold other arrays (label maps, scores) that must not be written as class PNGs."""
    return stage in INGESTED_MASKS or mask_method_of_stage(stage) is not None


def exportable_stages(workspace: Workspace) -> list[str]:
    """The mask stages a workspace can export: the ingested ones and its pseudo-mask stages."""
    return [*INGESTED_MASKS, *(s for s in workspace.stages() if mask_method_of_stage(s) is not None)]


def exportable_ids(workspace: Workspace, stage: str) -> list[str]:
    """Images whose mask for `stage` is complete."""
    if stage in INGESTED_MASKS:
        return [i for i in workspace.image_ids() if workspace.has_array(stage, i)]
    if not is_mask_stage(stage) or workspace.stage_meta(stage) is None:
        raise WorkspaceError(
            f"{workspace.path}: no mask stage {stage!r} (exportable: {', '.join(exportable_stages(workspace))})"
        )
    return sorted(workspace.done_ids(stage))


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder (export writes one <image id>.png per image there)")


def check_class_mask(stage: str, image_id: str, mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise WorkspaceError(f"{stage}/{image_id}: not a class mask (shape {mask.shape}, {mask.dtype})")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise WorkspaceError(
            f"{stage}/{image_id}: values {mask.min()}..{mask.max()} are not class indices "
            "(a class mask holds 0..254 and 255 for void)"
        )
    if mask.shape != tuple(image_shape[:2]):
        raise WorkspaceError(f"{stage}/{image_id}: mask is {mask.shape} but the image is {image_shape[:2]}")
    return mask.astype(np.uint8)


def export_masks(
    workspace: Workspace,
    stage: str,
    out_dir: str | Path,
    on_image: Callable[[str], None] | None = None,
    manual: bool = True,
) -> list[Path]:
    """Write one PNG per complete image of the stage; returns the files written.

    manual: a pseudo-mask set's image that has a manual mask (a person's) is written with that
    mask (what every later stage uses for it); False: the method's own masks only."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    image_ids = exportable_ids(workspace.require(), stage)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image_id in image_ids:
        image_shape = workspace.array_shape("images", image_id)
        source = MANUAL if manual and stage not in INGESTED_MASKS and workspace.has_array(MANUAL, image_id) else stage
        mask = check_class_mask(source, image_id, workspace.read_array(source, image_id), image_shape)
        path = out_dir / f"{image_id}.png"
        save_palette_png(path, mask)
        written.append(path)
        if on_image:
            on_image(image_id)
    return written
