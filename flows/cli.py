"""The `wsss` command line: parse options, call a flow, print what it did. It decides nothing.

Presets, weights fallbacks and engines are resolved inside the flows, so a Prefect
deployment or a Dask worker runs exactly what a command runs. Heavy libraries (torch,
prefect, mlflow) are imported only by the command that needs them: `wsss --help` and
`wsss status` start fast.

Errors a user can cause end in one line on stderr, `error: <file or thing>: <problem>`, and
exit 2 (WsssGroup); images that failed make a finished command exit 1 (finish). `wsss --debug`
shows the tracebacks instead.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import click
import typer
from typer.core import TyperGroup

from wsss_core.errors import WsssError
from wsss_core.registries import (
    AUTO,
    BACKBONES,
    ENGINES,
    GRAPHNET_PRESETS,
    PATHS,
    PROPAGATIONS,
    PSA_PRESETS,
    SEGMENTATION_ARCHS,
    SEGMENTATION_PRESETS,
    SUPERVISIONS,
)

# Errors a user can cause (a wrong request, an unusable dataset, workspace or output folder, a
# file system that refuses): reported in one line, exit 2. Anything else is a bug: traceback.
REPORTED_ERRORS = (WsssError, OSError)
DEBUG_KEY = "wsss.debug"


def debugging() -> bool:
    """True under `wsss --debug ...`."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(DEBUG_KEY))


def describe_os_error(error: OSError) -> str:
    """'<file>: permission denied' rather than '[Errno 13] Permission denied: <file>'."""
    problem = (error.strerror or str(error) or type(error).__name__).lower()
    if error.filename is None:
        return problem
    where = str(error.filename) + (f" -> {error.filename2}" if error.filename2 is not None else "")
    return f"{where}: {problem}"


def error_line(error: BaseException) -> str:
    return describe_os_error(error) if isinstance(error, OSError) and not isinstance(error, WsssError) else str(error)


class WsssGroup(TyperGroup):
    """The `wsss` group: a reported error of any command becomes `error: <file or thing>: <problem>`
    on stderr and exit 2, unless --debug asks for the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except REPORTED_ERRORS as error:
            if ctx.meta.get(DEBUG_KEY):
                raise
            typer.echo(f"error: {error_line(error)}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="wsss",
    help="Weakly-supervised semantic segmentation at dataset scale: weak labels in, dense pseudo masks out.",
    cls=WsssGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (and Prefect's) instead of one line.")] = False,
) -> None:
    """Options of every command (given before it: wsss --debug ingest ...)."""
    ctx.meta[DEBUG_KEY] = debug


def checked(names: tuple[str, ...]) -> Callable[..., Any]:
    """A typer callback that refuses a value outside names with the list of valid ones (exit 2)."""

    def check(param: typer.CallbackParam, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is not None and str(item) not in names:
                raise typer.BadParameter(f"{item!r}: choose {', '.join(names)}", param=param)
        return value

    return check


def workspace_dir(value: Path) -> Path:
    """A typer callback: a file:// URL becomes its path, an object-store URL is refused before
    a flow command starts Prefect (Workspace refuses it too, for flows run by a deployment)."""
    from wsss_core.store import workspace_path

    return workspace_path(value)


WorkspaceOpt = Annotated[
    Path, typer.Option("--workspace", "-w", callback=workspace_dir, help="Workspace directory (holds store.zarr).")
]
SplitOpt = Annotated[
    Optional[list[str]], typer.Option("--split", help="Only images of this split (repeat for several; default: all).")
]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu or cuda for the networks (default: cuda if any).")]
EvaluateOpt = Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Score the masks against GT.")]
MlflowOpt = Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log trainings and evaluation to MLflow.")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Change any config value by name, e.g. --set gcn.epochs=50 (YAML value; repeatable)."),
]

# The execution options every command that processes images takes (see with_execution).
EXECUTION_OPTIONS = {
    "engine": (str, typer.Option(callback=checked(ENGINES.names()), help=f"Where batches run: {ENGINES.help()}.")),
    "workers": (Optional[int], typer.Option(help="Parallel workers (default: CPU cores).", min=1)),
    "dask_address": (Optional[str], typer.Option(help="Address of a running Dask scheduler (with --engine dask).")),
    "batch_size": (int, typer.Option(help="Images per task.", min=1)),
    "progress": (bool, typer.Option("--progress/--no-progress", help="Show progress bars.")),
}
EXECUTION_DEFAULTS = {"engine": "threads", "workers": None, "dask_address": None, "batch_size": 16, "progress": True}


def with_execution(command: Callable[..., None]) -> Callable[..., None]:
    """Add the execution options (engine, workers, dask address, batch size, progress) to a
    command; it receives them as one `execution` dict (the flows' Execution)."""
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=EXECUTION_DEFAULTS[name], annotation=Annotated[kind, option])
        for name, (kind, option) in EXECUTION_OPTIONS.items()
    ]
    parameters = [p for p in signature.parameters.values() if p.name != "execution"] + extra

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        execution = {name: kwargs.pop(name) for name in EXECUTION_OPTIONS}
        return command(execution=execution, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{k: v for k, v in command.__annotations__.items() if k != "execution"},
        **{p.name: p.annotation for p in extra},
    }
    return wrapper


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def parse_settings(assignments: list[str] | None) -> dict[str, Any]:
    """--set a.b=1 --set c=[1,2] -> {"a.b": 1, "c": [1, 2]} (values read as YAML)."""
    import yaml

    settings: dict[str, Any] = {}
    for assignment in assignments or []:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            fail(f"--set {assignment!r}: expected NAME=VALUE, e.g. gcn.epochs=50")
        try:
            settings[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            settings[name.strip()] = value
    return settings


class ReportedErrorFilter(logging.Filter):
    """Drops a log record whose exception the CLI reports itself in one line.

    Prefect's flow engine logs a failing flow's exception with its traceback ("Encountered
    exception during execution") before re-raising it to call_flow; its task engine does the
    same for a task's. The filter sits on the console handlers only: the run's log in the
    Prefect API (the UI) keeps the traceback.
    """

    enabled = True

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (self.enabled and isinstance(error, REPORTED_ERRORS))


CONSOLE_FILTER = ReportedErrorFilter()


def quiet_prefect_console(enabled: bool) -> None:
    """Put CONSOLE_FILTER on Prefect's console handlers (once), on or off."""
    from prefect.logging.handlers import PrefectConsoleHandler

    CONSOLE_FILTER.enabled = enabled
    loggers = [logging.getLogger()] + [
        logger for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("prefect") and isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and CONSOLE_FILTER not in handler.filters:
                handler.addFilter(CONSOLE_FILTER)


def call_flow(target: str, **parameters: Any) -> Any:
    """Import the flow `module:name` and run it; its reported errors reach WsssGroup without
    Prefect printing their traceback first. A flow whose images failed ends Failed but still
    returns what it did (finish() exits 1)."""
    from flows.common import flow_result
    from wsss_core.registries import resolve_target

    flow = resolve_target(target)
    quiet_prefect_console(not debugging())
    return flow_result(flow, **parameters)


def finish(summaries: list, started: float) -> None:
    """Print what each stage did; exit 1 when any image failed."""
    for summary in summaries:
        typer.echo(summary.line(), err=True)
        for image_id, message in list(summary.failed.items())[:10]:
            typer.echo(f"  failed {image_id}: {message}", err=True)
        if len(summary.failed) > 10:
            typer.echo(f"  ... and {len(summary.failed) - 10} more (see `wsss status`)", err=True)
    typer.echo(f"finished in {time.perf_counter() - started:.1f} s", err=True)
    if any(not s.ok for s in summaries):
        typer.echo("images failed: `wsss status` lists them; fix them, then `wsss retry-failed` re-runs just them", err=True)
        raise typer.Exit(1)


def splits_of(split: list[str] | None) -> list[str] | None:
    return list(split) if split else None


@app.command()
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
) -> None:
    """Write the built-in synthetic dataset (VOC layout with classes.txt, masks, boxes, scribbles)."""
    from wsss_core.data.wild import generate_variant

    started = time.perf_counter()
    root = generate_variant(out, variant, images, width, height, seed)
    typer.echo(f"wrote {images} images to {root} in {time.perf_counter() - started:.1f} s", err=True)


@app.command()
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


@app.command()
@with_execution
def superpixels(
    workspace: WorkspaceOpt,
    preset: Annotated[
        str, typer.Option(callback=checked((AUTO, *GRAPHNET_PRESETS.names())), help="The GraphNet preset whose SLIC settings to use.")
    ] = AUTO,
    method: Annotated[Optional[str], typer.Option(callback=checked(("slic", "felzenszwalb")), help="Override the preset's method.")] = None,
    segments_per_100k: Annotated[Optional[float], typer.Option(help="Override: SLIC segments per 100k pixels.", min=1)] = None,
    compactness: Annotated[Optional[float], typer.Option(help="Override: SLIC compactness.")] = None,
    split: SplitOpt = None,
    execution: dict[str, Any] | None = None,
) -> None:
    """Superpixels (int32 label maps) for every ingested image, as `wsss graphnet` computes them."""
    overrides = {
        name: value
        for name, value in (("method", method), ("segments_per_100k_pixels", segments_per_100k), ("compactness", compactness))
        if value is not None
    }
    started = time.perf_counter()
    run = call_flow(
        "flows.superpixels:superpixels_flow", workspace=str(workspace), preset=preset, overrides=overrides or None,
        splits=splits_of(split), execution=execution,
    )
    finish(run.summaries, started)


@app.command()
def status(
    workspace: WorkspaceOpt,
    all_failures: Annotated[bool, typer.Option("--all", help="List every failed image, not the first 20.")] = False,
    worst: Annotated[int, typer.Option("--worst", help="Lowest-confidence images listed per mask set.", min=0)] = 3,
) -> None:
    """Per-stage counts of done / failed / pending images, the failed images with their errors, and per
    mask set its median confidence and lowest-confidence images (the ones to check by hand)."""
    from flows.status import print_status

    print_status(workspace, all_failures, worst)


@app.command()
def check(
    workspace: WorkspaceOpt,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Read back every stored array of every done image; an unreadable one is marked not done
    (a failure record in the stage that wrote it) so that the next run recomputes it.
    Exit 0: all readable; 1: something was repaired."""
    from flows.check import run_check

    try:
        report = run_check(workspace, progress)
    except WsssError as error:
        fail(str(error))
    if report.problems:
        raise typer.Exit(1)


@app.command()
def gc(workspace: WorkspaceOpt) -> None:
    """Delete the arrays, pack rows, markers and records of images no split list names any more
    (they are in no result already); prints what went and the bytes freed. Run it while no run
    writes to the workspace. An image that comes back later is read again."""
    from wsss_core.garbage import collect_garbage
    from wsss_core.store import Workspace

    try:
        report = collect_garbage(Workspace(workspace))
    except WsssError as error:
        fail(str(error))
    typer.echo(report.line(), err=True)


@app.command()
def export(
    workspace: WorkspaceOpt,
    stage: Annotated[str, typer.Option(help="Mask stage to export: gt, scribbles, pseudo/<method> or pseudo/<method>/round-<k> (others hold no class masks).")],
    out: Annotated[Path, typer.Option(help="Folder for <image id>.png files (made if missing; not a file).")],
) -> None:
    """Write a stage's masks as palette PNGs (pixel value = class index, 255 = void), one per image."""
    from rich.console import Console
    from rich.progress import Progress

    from wsss_core.export import check_out_dir, export_masks, exportable_ids
    from wsss_core.store import Workspace

    ws = Workspace(workspace)
    check_out_dir(out)  # before the progress bar shows
    total = len(exportable_ids(ws.require(), stage))
    with Progress(console=Console(stderr=True)) as bar:
        task = bar.add_task(f"export {stage}", total=total)
        written = export_masks(ws, stage, out, on_image=lambda _: bar.advance(task))
    typer.echo(f"wrote {len(written)} masks of {stage} to {out}", err=True)


@app.command()
def evaluate(
    workspace: WorkspaceOpt,
    stage: Annotated[list[str], typer.Option(help="Mask stage to score (repeat the option for several).")],
    run_name: Annotated[str, typer.Option(help="Name of the report, reports/evaluation-<name>.json (a param of the MLflow run).")] = "evaluate",
    split: SplitOpt = None,
    mlflow: MlflowOpt = True,
) -> None:
    """mIoU and per-class IoU of mask stages against the GT masks (255 ignored), as a table."""
    started = time.perf_counter()
    call_flow(
        "flows.evaluate:evaluate_flow", workspace=str(workspace), stages=stage, run_name=run_name,
        log_to_mlflow=mlflow, splits=splits_of(split),
    )
    typer.echo(f"finished in {time.perf_counter() - started:.1f} s", err=True)


@app.command()
@with_execution
def graphnet(
    workspace: WorkspaceOpt,
    supervision: Annotated[
        str,
        typer.Option(
            callback=checked(SUPERVISIONS.names()),
            help="The weak labels to start from; tags: the affinitynet path's CAM stages (run when missing) seed the graph.",
        ),
    ] = "scribbles",
    preset: Annotated[
        str,
        typer.Option(
            callback=checked((AUTO, *GRAPHNET_PRESETS.names())),
            help=f"{GRAPHNET_PRESETS.help()}; auto: paper when the pretrained weights load, else offline.",
        ),
    ] = AUTO,
    backbone: Annotated[Optional[str], typer.Option(callback=checked(BACKBONES.names()), help="CNN for node features (default: the preset's, vgg16).")] = None,
    weights: Annotated[
        Optional[str], typer.Option(help="torchvision weights name, checkpoint path, or none (default: DEFAULT; offline fallback: the CAM classifier).")
    ] = None,
    propagation: Annotated[str, typer.Option(callback=checked(PROPAGATIONS.names()), help=PROPAGATIONS.help() + ".")] = "gcn",
    crf: Annotated[bool, typer.Option("--crf/--no-crf", help="Also write <method>-crf masks (dense CRF).")] = False,
    until: Annotated[
        Optional[str], typer.Option(help="Stop after this step: superpixels, features, graphs, seeds, propagation, masks, baselines.")
    ] = None,
    gcn_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's GCN epochs (same as --set gcn.epochs=N).", min=1)] = None,
    set_: SetOpt = None,
    cam_set: Annotated[
        Optional[list[str]],
        typer.Option("--cam-set", help="With --supervision tags: an affinitynet --set for its CAM stages (use the same as there to reuse them)."),
    ] = None,
    split: SplitOpt = None,
    device: DeviceOpt = None,
    evaluate: EvaluateOpt = True,
    mlflow: MlflowOpt = True,
    execution: dict[str, Any] | None = None,
) -> None:
    """GraphNet pseudo masks from scribbles, boxes or tags: superpixels -> features -> graphs -> seeds -> GCN -> masks."""
    overrides = parse_settings(set_)
    cam_overrides = parse_settings(cam_set)
    if gcn_epochs is not None:
        overrides["gcn.epochs"] = gcn_epochs
    started = time.perf_counter()
    run = call_flow(
        "flows.graphnet:graphnet_flow", workspace=str(workspace), supervision=supervision, preset=preset,
        propagation=propagation, crf=crf, backbone=backbone, weights=weights, overrides=overrides or None,
        splits=splits_of(split), until=until, evaluate=evaluate, log_to_mlflow=mlflow, device=device, execution=execution,
        cam_overrides=cam_overrides or None,
    )
    finish(run.summaries, started)


@app.command()
@with_execution
def affinitynet(
    workspace: WorkspaceOpt,
    preset: Annotated[
        str,
        typer.Option(
            callback=checked((AUTO, *PSA_PRESETS.names())),
            help=f"{PSA_PRESETS.help()}; auto: paper from 1000 images with a GPU, else small.",
        ),
    ] = AUTO,
    backbone: Annotated[Optional[str], typer.Option(callback=checked(BACKBONES.names()), help="Backbone of both networks (default: the preset's).")] = None,
    weights: Annotated[
        Optional[str], typer.Option(help="torchvision weights name, checkpoint path, or none (default: the preset's; falls back to random init, loudly).")
    ] = None,
    stride: Annotated[Optional[int], typer.Option(callback=checked(("8", "4")), help="Random-walk grid stride: 8 (PSA) or 4.")] = None,
    crf: Annotated[bool, typer.Option("--crf/--no-crf", help="Also write pseudo/rw-crf (dense CRF on the walk).")] = True,
    until: Annotated[
        Optional[str], typer.Option(help="Stop after this step: train-cam, cams, affinity-labels, train-affinitynet, random-walk, masks.")
    ] = None,
    cam_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's CAM classifier epochs.", min=1)] = None,
    affinity_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's AffinityNet epochs.", min=1)] = None,
    train_threads: Annotated[Optional[int], typer.Option(help="Torch threads of a CPU training (default: one per core).", min=1)] = None,
    set_: SetOpt = None,
    split: SplitOpt = None,
    device: DeviceOpt = None,
    evaluate: EvaluateOpt = True,
    mlflow: MlflowOpt = True,
    execution: dict[str, Any] | None = None,
) -> None:
    """AffinityNet (PSA) pseudo masks from image tags: CAMs -> affinity labels -> AffinityNet -> random walk."""
    overrides = parse_settings(set_)
    if cam_epochs is not None:
        overrides["cam_train.epochs"] = cam_epochs
    if affinity_epochs is not None:
        overrides["affinity_train.epochs"] = affinity_epochs
    started = time.perf_counter()
    run = call_flow(
        "flows.affinitynet:affinitynet_flow", workspace=str(workspace), preset=preset, backbone=backbone,
        weights=weights, stride=int(stride) if stride else None, crf=crf, overrides=overrides or None,
        splits=splits_of(split), until=until, evaluate=evaluate, log_to_mlflow=mlflow, device=device,
        train_threads=train_threads, execution=execution,
    )
    finish(run.summaries, started)


@app.command()
@with_execution
def segment(
    workspace: WorkspaceOpt,
    labels: Annotated[str, typer.Option(help="The pseudo masks of round 0: a method of the workspace (gcn-scribbles, rw-crf, ...).")],
    rounds: Annotated[int, typer.Option(help="Rounds: round k trains on round k-1's labels and predicts round k's.", min=1)] = 1,
    preset: Annotated[
        str,
        typer.Option(
            callback=checked((AUTO, *SEGMENTATION_PRESETS.names())),
            help=f"{SEGMENTATION_PRESETS.help()}; auto: paper from 1000 training images with a GPU, else small.",
        ),
    ] = AUTO,
    backbone: Annotated[
        Optional[str], typer.Option(callback=checked(SEGMENTATION_ARCHS.names()), help="DeepLabV3 variant (default: the preset's).")
    ] = None,
    weights: Annotated[
        Optional[str],
        typer.Option(help="Backbone weights: torchvision name, checkpoint path, or none (offline fallback: the CAM classifier when it fits, else random init)."),
    ] = None,
    output_stride: Annotated[Optional[int], typer.Option(callback=checked(("8", "16")), help="8 or 16 (default: the preset's).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override the preset's training epochs (same as --set train.epochs=N).", min=1)] = None,
    train_split: Annotated[str, typer.Option(help="The split whose labels the network trains on.")] = "train",
    until: Annotated[Optional[str], typer.Option(help="Stop after this step: round-1, round-2, ...")] = None,
    train_threads: Annotated[Optional[int], typer.Option(help="Torch threads of a CPU training (default: one per core).", min=1)] = None,
    set_: SetOpt = None,
    split: SplitOpt = None,
    device: DeviceOpt = None,
    evaluate: EvaluateOpt = True,
    mlflow: MlflowOpt = True,
    execution: dict[str, Any] | None = None,
) -> None:
    """Segmentation rounds: DeepLabV3 trained on pseudo masks (train split) predicts every image; repeat.

    Writes pseudo/<method>/round-<k> (exportable) and evaluates round 0 and every round.
    """
    overrides = parse_settings(set_)
    if epochs is not None:
        overrides["train.epochs"] = epochs
    started = time.perf_counter()
    run = call_flow(
        "flows.segment:segment_flow", workspace=str(workspace), labels=labels, rounds=rounds, preset=preset,
        backbone=backbone, weights=weights, output_stride=int(output_stride) if output_stride else None,
        overrides=overrides or None, train_split=train_split, splits=splits_of(split), until=until, evaluate=evaluate,
        log_to_mlflow=mlflow, device=device, train_threads=train_threads, execution=execution,
    )
    finish(run.summaries, started)


@app.command()
def run(
    workspace: WorkspaceOpt,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML run config (see examples/run.yaml).")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Ingest this dataset first (VOC layout).")] = None,
    ingest_split: Annotated[Optional[list[str]], typer.Option(help="Splits to ingest with --root (default: train).")] = None,
    path: Annotated[
        Optional[list[str]], typer.Option(callback=checked(PATHS.names()), help="Only this path (repeatable; default: every path the weak labels allow).")
    ] = None,
    rounds: Annotated[
        Optional[int], typer.Option(help="Segmentation rounds on each path's final masks (default: the config's, 1; 0: none).", min=0)
    ] = None,
    set_: SetOpt = None,
    split: SplitOpt = None,
    device: DeviceOpt = None,
    evaluate: EvaluateOpt = True,
    mlflow: MlflowOpt = True,
    engine: Annotated[Optional[str], typer.Option(callback=checked(ENGINES.names()), help="Where batches run (default: the config's, threads).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel workers (default: CPU cores).", min=1)] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="Address of a running Dask scheduler.")] = None,
    run_name: Annotated[str, typer.Option(help="Name of the evaluation report, reports/evaluation-<name>.json.")] = "run",
) -> None:
    """The whole pipeline: (ingest) -> every applicable path (GraphNet scribbles / boxes, AffinityNet) -> segmentation rounds -> one evaluation table.

    Settings come from --config, then --set NAME=VALUE (e.g. --set graphnet.crf=true), then the options here.
    """
    settings = parse_settings(set_)
    for name, value in (
        ("ingest.root", str(root) if root else None), ("ingest.splits", ingest_split), ("paths", path),
        ("splits", split), ("device", device), ("execution.engine", engine), ("execution.workers", workers),
        ("execution.dask_address", dask_address),
    ):
        if value:
            settings[name] = value
    if rounds is not None:
        settings["segmentation.rounds"] = rounds
    if not evaluate:
        settings["evaluate"] = False
    if not mlflow:
        settings["mlflow"] = False
    started = time.perf_counter()
    whole = call_run_flow(workspace, config, settings, run_name)
    if whole.report:
        typer.echo(f"report: {whole.report}", err=True)
    finish(whole.summaries, started)


@app.command("retry-failed")
@with_execution
def retry_failed(
    workspace: WorkspaceOpt,
    stage: Annotated[Optional[list[str]], typer.Option(help="Only the failures of this stage (repeatable; default: every stage).")] = None,
    ids: Annotated[Optional[list[str]], typer.Option("--ids", help="Only these images (repeatable; default: every failed image).")] = None,
    evaluate: EvaluateOpt = True,
    mlflow: MlflowOpt = True,
    execution: dict[str, Any] | None = None,
) -> None:
    """Re-run exactly the failed images: from the stage where each failed onwards, with the settings it ran with.

    Records of images the dataset no longer lists are dropped; those of images that now succeed are cleared.
    Exit 1 when images still fail (see `wsss status`).
    """
    started = time.perf_counter()
    whole = call_flow(
        "flows.retry:retry_failed_flow", workspace=str(workspace), stages=list(stage) if stage else None,
        ids=list(ids) if ids else None, evaluate=evaluate, log_to_mlflow=mlflow, execution=execution,
    )
    for name, why in whole.skipped.items():
        typer.echo(f"not retried: {name}: {why}", err=True)
    finish(whole.summaries, started)
    if whole.skipped:
        raise typer.Exit(1)


@app.command()
def compare(
    workspace: Annotated[
        Optional[list[Path]], typer.Option("--workspace", "-w", help="A workspace whose MLflow store to read (repeatable: read together).")
    ] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="A tracking store shared by workspaces (e.g. sqlite:///runs.db, http://127.0.0.1:5000).")] = None,
    experiment: Annotated[Optional[str], typer.Option(help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else wsss).")] = None,
    metric: Annotated[str, typer.Option(help="Metric to rank by (miou, iou/<class>, pixel_accuracy: percent; or a training's loss).")] = "miou",
    filter_: Annotated[
        Optional[str], typer.Option("--filter", help="MLflow search filter, e.g. \"params.split = 'val' and params.round = '0'\".")
    ] = None,
    ascending: Annotated[bool, typer.Option("--ascending", help="Lowest first (for a loss).")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many runs.", min=1)] = 50,
) -> None:
    """Runs sorted by a metric, best first, with only the params that differ between them: which setting won."""
    from wsss_core.experiments import compare_runs
    from wsss_core.tracking import experiment_name

    typer.echo(compare_runs(workspace or [], tracking_uri, experiment or experiment_name(), metric, filter_ or "", ascending, limit))


@app.command()
def report(
    workspace: WorkspaceOpt,
    out: Annotated[Optional[Path], typer.Option(help="The HTML file to write (default: WS/reports/report.html).")] = None,
    sample: Annotated[int, typer.Option(help="Images in the overlay sample.", min=0)] = 8,
    worst: Annotated[int, typer.Option(help="Worst images shown.", min=0)] = 8,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="List the workspace's MLflow runs (read-only).")] = True,
) -> None:
    """A self-contained HTML page of the workspace: dataset, results, overlays, worst images, stages, configs, MLflow runs."""
    from wsss_core.report import ReportConfig, write_report

    typer.echo(str(write_report(workspace, out, ReportConfig(sample=sample, worst=worst, mlflow=mlflow))))


@app.command()
def ui(
    workspace: WorkspaceOpt,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = 5000,
) -> None:
    """MLflow's UI on the workspace's tracking store, on 127.0.0.1, until Ctrl-C."""
    from wsss_core.experiments import serve_ui

    if serve_ui(workspace, port, lambda line: typer.echo(line, err=True)) != 0:
        raise typer.Exit(1)  # the server stopped by itself (its messages are above)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo writes its dataset (OUT/dataset) and workspace (OUT/workspace).")] = Path("demo"),
    images: Annotated[Optional[int], typer.Option(help="Images in the built-in dataset (default: the demo config's).", min=1)] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="The run config (default: examples/demo.yaml of this checkout).")
    ] = None,
    set_: SetOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    mlflow: MlflowOpt = True,
) -> None:
    """The whole pipeline on the built-in dataset: generate it (train and val) -> `wsss run` with the
    demo config (every path, a segmentation round each, evaluation, report) -> the results table.

    Exactly `wsss run --workspace OUT/workspace --config examples/demo.yaml --set ingest.root=OUT/dataset`;
    run again, it finds everything done.
    """
    from wsss_core.run_config import DEMO_CONFIG

    settings = parse_settings(set_)
    settings["ingest.root"] = str(out / "dataset")
    if images is not None:
        settings["generate.images"] = images
    if not progress:
        settings["execution.progress"] = False
    if not mlflow:
        settings["mlflow"] = False
    workspace = out / "workspace"
    started = time.perf_counter()
    whole = call_run_flow(workspace, config or DEMO_CONFIG, settings, "demo")
    print_demo_summary(whole, workspace, mlflow)
    finish(whole.summaries, started)


def call_run_flow(workspace: Path, config: Path | None, settings: dict[str, Any], run_name: str | None) -> Any:
    """flows.run:run_flow, as `wsss run` and `wsss demo` call it."""
    return call_flow(
        "flows.run:run_flow", workspace=str(workspace), config_file=str(config) if config else None,
        settings=settings or None, run_name=run_name,
    )


def tool_command(name: str) -> str:
    """How to call a command of this environment: its name when it is on PATH, else its path."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    found = shutil.which(name)
    if not beside.exists() or (found and Path(found).resolve() == beside.resolve()):
        return name
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def print_demo_summary(whole: Any, workspace: Path, mlflow: bool) -> None:
    """The results table (stdout), then where everything is and how to look at it."""
    import os

    from wsss_core.report import results_text

    if whole.evaluation:
        typer.echo("\nmIoU (%) on the built-in synthetic dataset (round 0: the pseudo masks; * best of a column):")
        typer.echo(results_text(whole.evaluation))
    else:
        typer.echo("\nnothing was scored (see the messages above)")
    lines = [f"workspace: {workspace}"]
    if whole.report:
        lines.append(f"report:    {whole.report}")
    if mlflow:
        lines.append(f"MLflow UI: {tool_command('wsss')} ui --workspace {workspace}    (http://127.0.0.1:5000)")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        lines.append(f"Prefect UI: {api.rstrip('/').removesuffix('/api')} (the flow runs went to the server in PREFECT_API_URL)")
    else:
        from prefect.settings import get_current_settings

        lines.append(
            f"Prefect UI: {tool_command('prefect')} server start --host 127.0.0.1 --port 4200 --analytics-off    "
            f"(http://127.0.0.1:4200; the flow runs are in its database under {get_current_settings().home}; "
            "with export PREFECT_API_URL=http://127.0.0.1:4200/api later commands report to it live)"
        )
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
