"""Data in and out of a workspace: `wsss generate`, `wsss ingest`, `wsss export`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.app import WorkspaceOpt, call_flow, checked, finish, with_execution


def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the dataset to (VOC layout).")] = Path("data/synthetic"),
    images: Annotated[int, typer.Option(help="Number of images.", min=1)] = 200,
    width: Annotated[int, typer.Option(min=32)] = 256,
    height: Annotated[int, typer.Option(min=32)] = 192,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same dataset.")] = 0,
    variant: Annotated[
        str,
        typer.Option(
            callback=checked(("standard", "holdout", "wild")),
            help="holdout: same classes, other shapes/backgrounds. wild: the seed draws its own classes "
            "(3-7, photo / grey / procedural textures), backgrounds and clutter (min 64x64).",
        ),
    ] = "standard",
    label_mix: Annotated[
        Optional[str],
        typer.Option(
            help="Which weak labels each image keeps, e.g. scribbles=0.2,boxes=0.2,tags=0.6 (shares of the "
            "images, drawn from the seed; join kinds with +: scribbles+boxes=0.1). Every image keeps its tags. "
            "Default: every label on every image.",
        ),
    ] = None,
) -> None:
    """Write the built-in synthetic dataset (VOC layout with classes.txt, masks, boxes, scribbles)."""
    from wsss_core.data.label_mix import parse_label_mix
    from wsss_core.data.wild import generate_variant

    started = time.perf_counter()
    mix = parse_label_mix(label_mix) if label_mix else None
    root = generate_variant(out, variant, images, width, height, seed, mix)
    typer.echo(f"wrote {images} images to {root} in {time.perf_counter() - started:.1f} s", err=True)


@with_execution
def ingest(
    root: Annotated[Path, typer.Option(help="Dataset root (VOC layout), or the instances JSON with --format coco.")],
    workspace: WorkspaceOpt,
    format: Annotated[str, typer.Option("--format", callback=checked(("voc", "coco")), help="Dataset layout.")] = "voc",
    split: Annotated[
        list[str], typer.Option(help="Split list under ImageSets/Segmentation (VOC); repeat for several.")
    ] = ["train"],  # noqa: B006 - typer reads the default
    scribbles: Annotated[Optional[Path], typer.Option(help="Scribble folder (default: ROOT/scribbles).")] = None,
    image_dir: Annotated[Optional[Path], typer.Option(help="Image folder (COCO).")] = None,
    max_side: Annotated[
        int,
        typer.Option(
            help="Reject images whose longer side exceeds this. Changing it re-reads nothing: images "
            "refused before are retried under the new limit; images already ingested are kept.",
            min=1,
        ),
    ] = 4096,
    execution: dict[str, Any] | None = None,
) -> None:
    """Read a dataset into a workspace. Images already ingested are skipped."""
    started = time.perf_counter()
    summary = call_flow(
        "flows.ingest:ingest_flow", root=str(root), workspace=str(workspace), format=format, split=list(split),
        scribbles_dir=str(scribbles) if scribbles else None, image_dir=str(image_dir) if image_dir else None,
        options={"max_side": max_side}, execution=execution,
    )
    finish([summary], started)


def export(
    workspace: WorkspaceOpt,
    stage: Annotated[str, typer.Option(help="Mask stage to export: gt, scribbles, manual, pseudo/<method> or pseudo/<method>/round-<k> (others hold no class masks).")],
    out: Annotated[Path, typer.Option(help="Folder for <image id>.png files (made if missing; not a file).")],
    manual: Annotated[bool, typer.Option("--manual/--no-manual", help="An image with a manual mask (a person's) is written with it, as every later stage uses it; --no-manual: the method's own masks.")] = True,
) -> None:
    """Write a stage's masks as palette PNGs (pixel value = class index, 255 = void), one per image."""
    from rich.console import Console
    from rich.progress import Progress

    from wsss_core.export import INGESTED_MASKS, check_out_dir, export_masks, exportable_ids
    from wsss_core.manual import manual_ids
    from wsss_core.store import Workspace

    ws = Workspace(workspace)
    check_out_dir(out)  # before the progress bar shows
    total = len(exportable_ids(ws.require(), stage))
    with Progress(console=Console(stderr=True)) as bar:
        task = bar.add_task(f"export {stage}", total=total)
        written = export_masks(ws, stage, out, on_image=lambda _: bar.advance(task), manual=manual)
    people = len(manual_ids(ws, [p.stem for p in written])) if manual and stage not in INGESTED_MASKS else 0
    typer.echo(f"wrote {len(written)} masks of {stage} to {out}" + (f" ({people} of them manual masks)" if people else ""), err=True)
