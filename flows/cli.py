"""The `wsss` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flows.common import DEFAULT_BATCH_SIZE, EngineConfig, StageSummary, console, make_task_runner
from wsss_core.errors import WsssError
from wsss_core.store import Workspace

app = typer.Typer(
    name="wsss",
    help="Weakly-supervised semantic segmentation at dataset scale: weak labels in, dense pseudo masks out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace directory (holds store.zarr).")]
BatchSizeOpt = Annotated[int, typer.Option(help="Images per task.", min=1)]
EngineOpt = Annotated[str, typer.Option(help="Where batch tasks run: threads, processes or dask.")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="Parallel workers (default: CPU cores).", min=1)]
DaskAddressOpt = Annotated[
    Optional[str], typer.Option(help="Address of a running Dask scheduler (with --engine dask).")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
EvaluateOpt = Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Score the masks against GT.")]


def _check_choice(value: object, choices: tuple, hint: str) -> None:
    """A usage error (exit 2) naming the option and its choices."""
    if value not in choices:
        raise typer.BadParameter(f"{value!r}: choose {', '.join(map(str, choices))}", param_hint=hint)


def _open_workspace(path: str | Path) -> Workspace:
    """The workspace at path; a plain message and exit 2 when there is none."""
    try:
        return Workspace(path).require()
    except WsssError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


def _engine(engine: str, workers: int | None, dask_address: str | None) -> EngineConfig:
    _check_choice(engine, ("threads", "processes", "dask"), "--engine")
    return EngineConfig(engine=engine, workers=workers, dask_address=dask_address)  # type: ignore[arg-type]


def _run_flow(flow, engine: EngineConfig, **parameters) -> StageSummary:
    """Run a flow with the chosen task runner; turn our errors into a message and exit 2."""
    try:
        if "workspace" in parameters and flow.name != "ingest":
            _open_workspace(parameters["workspace"])  # a plain message, not a flow-run traceback
        return flow.with_options(task_runner=make_task_runner(engine))(**parameters)
    except WsssError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


def _finish(summaries: list[StageSummary], started: float) -> None:
    """Print what each stage did; exit 1 when any image failed."""
    for summary in summaries:
        console.print(summary.line())
        for image_id, message in list(summary.failed.items())[:10]:
            console.print(f"  [red]failed[/red] {image_id}: {message}")
        if len(summary.failed) > 10:
            console.print(f"  ... and {len(summary.failed) - 10} more (see `wsss status`)")
    console.print(f"finished in {time.perf_counter() - started:.1f} s")
    if any(not s.ok for s in summaries):
        raise typer.Exit(1)


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the dataset to (VOC layout).")] = Path("data/synthetic"),
    images: Annotated[int, typer.Option(help="Number of images.", min=1)] = 200,
    width: Annotated[int, typer.Option(min=32)] = 256,
    height: Annotated[int, typer.Option(min=32)] = 192,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same dataset.")] = 0,
    variant: Annotated[str, typer.Option(help="standard, or holdout (same classes, other shapes/backgrounds).")] = "standard",
) -> None:
    """Write the built-in synthetic dataset (VOC layout with classes.txt, masks, boxes, scribbles)."""
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    started = time.perf_counter()
    config = SyntheticConfig(n_images=images, width=width, height=height, seed=seed, variant=variant)
    root = generate_dataset(out, config)
    console.print(f"wrote {images} images to {root} in {time.perf_counter() - started:.1f} s")


@app.command()
def ingest(
    root: Annotated[Path, typer.Option(help="Dataset root (VOC layout), or the instances JSON with --format coco.")],
    workspace: WorkspaceOpt,
    format: Annotated[str, typer.Option("--format", help="voc or coco.")] = "voc",
    split: Annotated[str, typer.Option(help="Split list under ImageSets/Segmentation (VOC).")] = "train",
    scribbles: Annotated[Optional[Path], typer.Option(help="Scribble folder (default: ROOT/scribbles).")] = None,
    image_dir: Annotated[Optional[Path], typer.Option(help="Image folder (COCO).")] = None,
    max_side: Annotated[int, typer.Option(help="Reject images whose longer side exceeds this.", min=1)] = 4096,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    engine: EngineOpt = "threads",
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Read a dataset into a workspace. Images already ingested are skipped."""
    from flows.ingest import ingest_flow
    from wsss_core.data.image_io import ReadOptions

    started = time.perf_counter()
    summary = _run_flow(
        ingest_flow,
        _engine(engine, workers, dask_address),
        root=str(root),
        workspace=str(workspace),
        format=format,
        split=split,
        scribbles_dir=str(scribbles) if scribbles else None,
        image_dir=str(image_dir) if image_dir else None,
        options=ReadOptions(max_side=max_side),
        batch_size=batch_size,
        progress=progress,
    )
    _finish([summary], started)


@app.command()
def superpixels(
    workspace: WorkspaceOpt,
    method: Annotated[str, typer.Option(help="slic or felzenszwalb.")] = "slic",
    segments_per_100k: Annotated[float, typer.Option(help="SLIC segments per 100k pixels.", min=1)] = 500.0,
    compactness: Annotated[float, typer.Option(help="SLIC compactness.")] = 10.0,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    engine: EngineOpt = "threads",
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Compute superpixels (int32 label maps) for every ingested image."""
    from flows.superpixels import superpixels_flow
    from wsss_core.superpixels import SuperpixelConfig

    started = time.perf_counter()
    config = SuperpixelConfig(method=method, segments_per_100k_pixels=segments_per_100k, compactness=compactness)  # type: ignore[arg-type]
    summary = _run_flow(
        superpixels_flow,
        _engine(engine, workers, dask_address),
        workspace=str(workspace),
        config=config,
        batch_size=batch_size,
        progress=progress,
    )
    _finish([summary], started)


@app.command()
def status(
    workspace: WorkspaceOpt,
    all_failures: Annotated[bool, typer.Option("--all", help="List every failed image, not the first 20.")] = False,
) -> None:
    """Per-stage counts of done / failed / pending images, and the failed images with their errors."""

    ws = Workspace(workspace)
    if not ws.exists():
        console.print(f"[red]error:[/red] {workspace}: no workspace here (run `wsss ingest` first)")
        raise typer.Exit(2)
    dataset = ws.dataset
    console.print(
        f"workspace {workspace}: dataset {dataset.get('name')} ({len(dataset.get('classes', []))} classes, "
        f"splits {', '.join(dataset.get('splits', [])) or '-'}), {len(ws.image_ids())} images"
    )
    table = Table("stage", "config", "done", "failed", "pending", "warnings", "note")
    for stage in ws.stages():
        st = ws.status(stage)
        note = "stale: an input stage has since changed config" if st.stale else ""
        table.add_row(stage, st.key or "-", str(st.done), str(st.failed), str(st.pending), str(len(ws.warnings(stage))), note)
    console.print(table)
    limit = None if all_failures else 20
    for stage in ws.stages():
        failures = ws.failures(stage)
        if failures:
            console.print(f"[red]{stage}: {len(failures)} failed[/red]")
            for record in failures[:limit]:
                console.print(f"  {record.image_id} [{record.kind}] {record.message}")
            if limit is not None and len(failures) > limit:
                console.print(f"  ... {len(failures) - limit} more (--all lists them)")


@app.command()
def export(
    workspace: WorkspaceOpt,
    stage: Annotated[str, typer.Option(help="Mask stage to export: gt, scribbles, or pseudo/<method>.")],
    out: Annotated[Path, typer.Option(help="Folder for <image id>.png files.")],
) -> None:
    """Write a stage's masks as palette PNGs (pixel value = class index, 255 = void), one per image."""
    from rich.progress import Progress

    from wsss_core.export import export_masks, exportable_ids

    ws = Workspace(workspace)
    try:
        total = len(exportable_ids(ws.require(), stage))
        with Progress(console=console) as bar:
            task = bar.add_task(f"export {stage}", total=total)
            written = export_masks(ws, stage, out, on_image=lambda _: bar.advance(task))
    except WsssError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    console.print(f"wrote {len(written)} masks of {stage} to {out}")


@app.command()
def evaluate(
    workspace: WorkspaceOpt,
    stage: Annotated[list[str], typer.Option(help="Mask stage to score (repeat the option for several).")],
    run_name: Annotated[str, typer.Option(help="Name of the MLflow run and of reports/evaluation-<name>.json.")] = "evaluate",
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the numbers to MLflow.")] = True,
) -> None:
    """mIoU and per-class IoU of mask stages against the GT masks (255 ignored), as a table."""
    from flows.evaluate import evaluate_flow

    started = time.perf_counter()
    _run_flow(
        evaluate_flow, EngineConfig(), workspace=str(workspace), stages=stage, run_name=run_name, log_to_mlflow=mlflow
    )
    console.print(f"finished in {time.perf_counter() - started:.1f} s")


@app.command()
def graphnet(
    workspace: WorkspaceOpt,
    supervision: Annotated[str, typer.Option(help="scribbles or boxes.")] = "scribbles",
    preset: Annotated[
        str,
        typer.Option(
            help="paper (CNN node features, binary graph, per-image Kipf GCN), offline (colour + texture nodes, "
            "dataset-level GCN; no pretrained weights needed) or auto (paper when the pretrained weights load, else offline)."
        ),
    ] = "auto",
    backbone: Annotated[str, typer.Option(help="CNN for node features: vgg16, resnet18/34/50/101.")] = "vgg16",
    weights: Annotated[
        str, typer.Option(help="torchvision weights name, checkpoint path, or none (offline fallback: the CAM classifier).")
    ] = "DEFAULT",
    propagation: Annotated[str, typer.Option(help="gcn or label-propagation.")] = "gcn",
    crf: Annotated[bool, typer.Option("--crf/--no-crf", help="Also write <method>-crf masks (dense CRF).")] = False,
    until: Annotated[
        Optional[str],
        typer.Option(help="Stop after this step: superpixels, features, graphs, seeds, propagation, masks, baselines."),
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda for the CNN and the GCN (default: cuda if any).")] = None,
    gcn_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's GCN epochs.", min=1)] = None,
    evaluate: EvaluateOpt = True,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the evaluation to MLflow.")] = True,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    engine: EngineOpt = "threads",
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """GraphNet pseudo masks from scribbles or boxes: superpixels -> features -> graphs -> seeds -> GCN -> masks."""
    from dataclasses import replace

    from flows.graphnet import STEPS, graphnet_flow
    from wsss_core.graphnet.config import PRESETS, PROPAGATIONS, SUPERVISIONS, choose_preset

    _check_choice(supervision, SUPERVISIONS, "--supervision")
    _check_choice(propagation, PROPAGATIONS, "--propagation")
    _check_choice(preset, (*PRESETS, "auto"), "--preset")
    if until is not None:
        _check_choice(until, STEPS, "--until")
    if preset == "auto":
        preset = choose_preset(backbone, weights)
        console.print(f"preset: {preset}")
    config = PRESETS[preset]()
    if gcn_epochs is not None:
        config = replace(config, gcn=replace(config.gcn, epochs=gcn_epochs))
    started = time.perf_counter()
    run = _run_flow(
        graphnet_flow,
        _engine(engine, workers, dask_address),
        workspace=str(workspace),
        supervision=supervision,
        backbone=backbone,
        weights=weights,
        propagation=propagation,
        crf=crf,
        config=config,
        device=device,
        batch_size=batch_size,
        progress=progress,
        until=until,
        evaluate=evaluate,
        log_to_mlflow=mlflow,
    )
    _finish(run.summaries, started)


@app.command()
def affinitynet(
    workspace: WorkspaceOpt,
    preset: Annotated[
        str,
        typer.Option(help="auto (small below 1000 images or without a GPU, else paper), paper (PSA's schedule) or small."),
    ] = "auto",
    backbone: Annotated[
        Optional[str], typer.Option(help="Backbone of both networks: resnet18/34/50/101, vgg16 (default: the preset's).")
    ] = None,
    weights: Annotated[
        Optional[str],
        typer.Option(help="torchvision weights name, checkpoint path, or none (default: the preset's; falls back to random init, loudly)."),
    ] = None,
    stride: Annotated[int, typer.Option(help="Random-walk grid stride: 8 (PSA) or 4.")] = 8,
    crf: Annotated[bool, typer.Option("--crf/--no-crf", help="Also write pseudo/rw-crf (dense CRF on the walk).")] = True,
    until: Annotated[
        Optional[str],
        typer.Option(help="Stop after this step: train-cam, cams, affinity-labels, train-affinitynet, random-walk, masks."),
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda for the networks (default: cuda if any).")] = None,
    cam_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's CAM classifier epochs.", min=1)] = None,
    affinity_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's AffinityNet epochs.", min=1)] = None,
    train_threads: Annotated[
        Optional[int], typer.Option(help="Torch threads of a CPU training (default: one per core).", min=1)
    ] = None,
    evaluate: EvaluateOpt = True,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log trainings and evaluation to MLflow.")] = True,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    engine: EngineOpt = "threads",
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """AffinityNet (PSA) pseudo masks from image tags: CAMs -> affinity labels -> AffinityNet -> random walk."""
    from dataclasses import replace

    from flows.affinitynet import STEPS, affinitynet_flow, default_train_threads, has_gpu
    from wsss_core.psa.config import PRESETS, choose_preset

    _check_choice(preset, ("auto", *PRESETS), "--preset")
    _check_choice(stride, (8, 4), "--stride")
    if until is not None:
        _check_choice(until, STEPS, "--until")
    ws = _open_workspace(workspace)
    gpu = has_gpu() if device is None else device.startswith("cuda")
    chosen, why = choose_preset(preset, len(ws.image_ids()), gpu)
    console.print(f"affinitynet: preset {chosen} ({why})")
    config = PRESETS[chosen]().with_backbone(backbone, weights).with_stride(stride)
    if cam_epochs is not None:
        config = replace(config, cam_train=replace(config.cam_train, epochs=cam_epochs))
    if affinity_epochs is not None:
        config = replace(config, affinity_train=replace(config.affinity_train, epochs=affinity_epochs))
    started = time.perf_counter()
    run = _run_flow(
        affinitynet_flow,
        _engine(engine, workers, dask_address),
        workspace=str(workspace),
        config=config,
        crf=crf,
        device=device,
        batch_size=batch_size,
        progress=progress,
        until=until,
        evaluate=evaluate,
        log_to_mlflow=mlflow,
        train_threads=train_threads or default_train_threads(),
    )
    _finish(run.summaries, started)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo writes its dataset and workspace.")] = Path("demo"),
    images: Annotated[int, typer.Option(help="Images in the built-in dataset.", min=1)] = 200,
    engine: EngineOpt = "threads",
    workers: WorkersOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Run the pipeline on the built-in dataset: generate, ingest, superpixels, then print the status."""
    from flows.ingest import ingest_flow
    from flows.superpixels import superpixels_flow
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    started = time.perf_counter()
    engine_config = _engine(engine, workers, None)
    root = out / "dataset"
    workspace = out / "workspace"
    if not (root / "classes.txt").exists():
        generate_dataset(root, SyntheticConfig(n_images=images))
        console.print(f"generated {images} images in {root}")
    summaries = [
        _run_flow(ingest_flow, engine_config, root=str(root), workspace=str(workspace), progress=progress),
        _run_flow(superpixels_flow, engine_config, workspace=str(workspace), progress=progress),
    ]
    status(workspace=workspace, all_failures=False)
    _finish(summaries, started)


if __name__ == "__main__":
    app()
