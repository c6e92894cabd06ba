"""The review loop: `wsss review export` (the least-confident masks to a labelling tool) and
`wsss review import` (the corrections back as dataset files); wsss_core/review/ does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.app import WorkspaceOpt, checked, debugging, fail

review_app = typer.Typer(
    name="review",
    help="The review loop: the least-confident pseudo masks to a labelling tool (CVAT, Label Studio), the fixes back.",
    no_args_is_help=True,
)
REVIEW_FORMATS = ("cvat", "label-studio")  # wsss_core.review.FORMATS (not imported: `wsss --help` stays fast)


@review_app.command("export")
def review_export(
    workspace: WorkspaceOpt,
    mask_set: Annotated[str, typer.Option("--mask-set", help="The pseudo masks to review: pseudo/<method> (or a round, pseudo/<method>/round-<k>).")],
    out: Annotated[Path, typer.Option(help="Folder for the task set: images/, the task file, review.json (made if missing).")],
    format: Annotated[str, typer.Option("--format", callback=checked(REVIEW_FORMATS), help="cvat (CVAT for images 1.1 XML) or label-studio (JSON tasks).")] = "cvat",
    worst: Annotated[Optional[int], typer.Option(help="The K least-confident images, as `wsss status --worst` orders them (default 10).", min=1)] = None,
    ids: Annotated[Optional[list[str]], typer.Option("--ids", help="These images instead: a,b,c (or repeat the option).")] = None,
    image_url: Annotated[
        Optional[str], typer.Option(help="Label Studio: what stands before images/<id>.png in a task (default /data/local-files/?d=).")
    ] = None,
) -> None:
    """Write the K least-confident images of a mask set (or named ones) as a task set a labelling tool imports.

    Each image carries its pseudo mask (one mask per class), scribbles, boxes, tags and confidence.
    """
    from wsss_core.review.export import DEFAULT_WORST, export_review

    names = [name for value in ids or [] for name in value.split(",") if name.strip()] if ids else None
    if ids is not None and worst is not None:
        fail("name the images with --ids or ask for the --worst K, not both")
    if ids is not None and not names:
        fail("--ids names no image")
    result = export_review(
        workspace, mask_set, out, format, worst_n=None if names else (worst or DEFAULT_WORST), ids=names, image_url=image_url
    )
    typer.echo(result.line(mask_set, format), err=True)


@review_app.command("import")
def review_import(
    workspace: WorkspaceOpt,
    root: Annotated[Path, typer.Option(help="The dataset root (VOC layout) the workspace was ingested from: the files are written there.")],
    from_: Annotated[Path, typer.Option("--from", help="The tool's export of the corrected annotations (CVAT: XML or its zip; Label Studio: JSON).")],
    format: Annotated[str, typer.Option("--format", callback=checked(REVIEW_FORMATS), help="cvat or label-studio.")] = "cvat",
    scribbles: Annotated[Optional[Path], typer.Option(help="Scribble folder (default: ROOT/scribbles), as given to ingest.")] = None,
) -> None:
    """Write a labelling tool's corrections into the dataset; `wsss run` then recomputes exactly those images.

    Scribble PNGs, VOC XML boxes and tags, and a full mask where a person drew one, each written atomically after everything was checked; a file with problems gets one line each and changes nothing.
    """
    from wsss_core.review.dataset import import_review
    from wsss_core.review.labels import ReviewFileError

    try:
        report = import_review(workspace, root, from_, format, scribbles_dir=scribbles)
    except ReviewFileError as error:
        if debugging():
            raise
        for problem in error.problems:
            typer.echo(f"error: {problem}", err=True)
        typer.echo(f"error: {from_}: {len(error.problems)} problem(s); nothing was written", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.line(), err=True)
