"""One path or step at a time: `wsss superpixels`, `wsss graphnet`, `wsss affinitynet`, `wsss segment`,
`wsss evaluate`; each calls its flow."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any, Optional

import typer

from cli.app import (
    MlflowOpt, SetOpt, SplitOpt, WorkspaceOpt, call_flow, checked, finish, parse_settings, splits_of, with_execution,
    with_request,
)
from wsss_core.requests import AffinityNetRequest, CamSettings, GraphNetRequest, SegmentationRequest, SuperpixelsRequest


def run_request(flow: str, workspace: Any, request: Any, execution: dict[str, Any] | None) -> None:
    """Call a path's flow with its request; print what each stage did (exit 1 when images failed)."""
    started = time.perf_counter()
    run = call_flow(flow, workspace=str(workspace), request=request, execution=execution)
    finish(run.summaries, started)


@with_execution
@with_request(SuperpixelsRequest)
def superpixels(
    workspace: WorkspaceOpt,
    method: Annotated[Optional[str], typer.Option(callback=checked(("slic", "felzenszwalb")), help="Override the preset's method.")] = None,
    segments_per_100k: Annotated[Optional[float], typer.Option(help="Override: SLIC segments per 100k pixels.", min=1)] = None,
    compactness: Annotated[Optional[float], typer.Option(help="Override: SLIC compactness.")] = None,
    request: SuperpixelsRequest = SuperpixelsRequest(),
    execution: dict[str, Any] | None = None,
) -> None:
    """Superpixels (int32 label maps) for every ingested image, as `wsss graphnet` computes them."""
    overrides = {
        name: value
        for name, value in (("method", method), ("segments_per_100k_pixels", segments_per_100k), ("compactness", compactness))
        if value is not None
    }
    run_request("flows.superpixels:superpixels_flow", workspace, replace(request, overrides=overrides), execution)


@with_execution
@with_request(GraphNetRequest)
def graphnet(
    workspace: WorkspaceOpt,
    gcn_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's GCN epochs (same as --set gcn.epochs=N).", min=1)] = None,
    set_: SetOpt = None,
    cam_set: Annotated[
        Optional[list[str]],
        typer.Option("--cam-set", help="With --supervision tags: an affinitynet --set for its CAM stages (use the same as there to reuse them)."),
    ] = None,
    request: GraphNetRequest = GraphNetRequest(),
    execution: dict[str, Any] | None = None,
) -> None:
    """GraphNet pseudo masks from scribbles, boxes or tags: superpixels -> features -> graphs -> seeds -> GCN -> masks."""
    overrides = with_epochs(parse_settings(set_), {"gcn.epochs": gcn_epochs})
    cam = CamSettings(overrides=parse_settings(cam_set))
    run_request("flows.graphnet:graphnet_flow", workspace, replace(request, overrides=overrides, cam=cam), execution)


@with_execution
@with_request(AffinityNetRequest)
def affinitynet(
    workspace: WorkspaceOpt,
    cam_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's CAM classifier epochs.", min=1)] = None,
    affinity_epochs: Annotated[Optional[int], typer.Option(help="Override the preset's AffinityNet epochs.", min=1)] = None,
    set_: SetOpt = None,
    request: AffinityNetRequest = AffinityNetRequest(),
    execution: dict[str, Any] | None = None,
) -> None:
    """AffinityNet (PSA) pseudo masks from image tags: CAMs -> affinity labels -> AffinityNet -> random walk."""
    overrides = with_epochs(parse_settings(set_), {"cam_train.epochs": cam_epochs, "affinity_train.epochs": affinity_epochs})
    run_request("flows.affinitynet:affinitynet_flow", workspace, replace(request, overrides=overrides), execution)


@with_execution
@with_request(SegmentationRequest)
def segment(
    workspace: WorkspaceOpt,
    epochs: Annotated[Optional[int], typer.Option(help="Override the preset's training epochs (same as --set train.epochs=N).", min=1)] = None,
    set_: SetOpt = None,
    request: SegmentationRequest = SegmentationRequest(),
    execution: dict[str, Any] | None = None,
) -> None:
    """Segmentation rounds: DeepLabV3 trained on pseudo masks (train split) predicts every image; repeat.

    Writes pseudo/<method>/round-<k> (exportable) and evaluates round 0 and every round.
    """
    overrides = with_epochs(parse_settings(set_), {"train.epochs": epochs})
    run_request("flows.segment:segment_flow", workspace, replace(request, overrides=overrides), execution)


def with_epochs(overrides: dict[str, Any], epochs: dict[str, int | None]) -> dict[str, Any]:
    """The --set overrides with the --*-epochs options that were given (those win)."""
    return {**overrides, **{name: value for name, value in epochs.items() if value is not None}}


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
