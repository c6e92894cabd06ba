"""One path or step at a time: `wsss superpixels`, `wsss graphnet`, `wsss affinitynet`, `wsss segment`,
`wsss evaluate`; each calls its flow."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

import typer

from cli.app import (
    DeviceOpt,
    EvaluateOpt,
    MlflowOpt,
    SetOpt,
    SplitOpt,
    WorkspaceOpt,
    call_flow,
    checked,
    finish,
    parse_settings,
    splits_of,
    with_execution,
)
from wsss_core.registries import (
    AUTO,
    BACKBONES,
    GRAPHNET_PRESETS,
    PROPAGATIONS,
    PSA_PRESETS,
    SEGMENTATION_ARCHS,
    SEGMENTATION_PRESETS,
    SUPERVISIONS,
)


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
