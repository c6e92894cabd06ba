"""What each path is asked for, declared once: the CLI builds these, the flows take them as
their `request` parameter (a deployment passes one as JSON, which Prefect validates into the
dataclass), the workspace remembers `to_dict()` for `wsss retry-failed`, and the run config's
sections are the same types. Defaults are the papers' values through each path's presets.

To add a setting to a path: add a field here (with its default) and read it in the flow; give
it `option(...)` and the path's command gets a `--name` option for it (cli.app.with_request).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from wsss_core.config import apply_overrides, config_to_dict
from wsss_core.errors import UsageError
from wsss_core.registries import (
    AUTO,
    BACKBONES,
    GRAPHNET_PRESETS,
    PATHS,
    PROPAGATIONS,
    PSA_PRESETS,
    SEGMENTATION_ARCHS,
    SEGMENTATION_PRESETS,
    SUPERVISIONS,
)

R = TypeVar("R", bound="Request")


def option(
    default: Any, help: str, *, choices: tuple[str, ...] | None = None, flag: str | None = None, min: int | None = None,
    required: bool = False,
) -> Any:
    """A request field with its command-line option: help, the values it takes, its flag
    (default --field-name), the least number, or required (no default on the command line)."""
    metadata = {"help": help, "choices": choices, "flag": flag, "min": min, "required": required}
    return field(default=default, metadata=metadata)


TRAIN_THREADS_HELP = "Torch threads of a CPU training (default: one per core)."


@dataclass(frozen=True)
class Request:
    """Which images a request covers (splits: None = every ingested image)."""

    # Prefect validates a flow's parameters with pydantic: a misspelt name in a deployment's
    # request must fail the run, not be dropped (pydantic reads this from a plain dataclass).
    __pydantic_config__ = {"extra": "forbid"}

    splits: tuple[str, ...] | None = option(
        None, "Only images of this split (repeat for several; default: all).", flag="--split"
    )

    def __post_init__(self) -> None:
        if self.splits is not None and not isinstance(self.splits, tuple):  # a list from Python callers
            object.__setattr__(self, "splits", tuple(self.splits) or None)

    @property
    def split_list(self) -> list[str] | None:
        return list(self.splits) if self.splits else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, as the workspace remembers it (Workspace.remember_request)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[R], values: Mapping[str, Any] | None) -> R:
        """The request a dict describes (to_dict's, or one remembered by an older workspace);
        an unknown name is a UsageError naming the valid ones."""
        return apply_overrides(cls(), upgrade(cls, dict(values or {})), cls.__name__)


@dataclass(frozen=True)
class PathRequest(Request):
    """What every path's request has besides its images: where to stop (until: a step name),
    where the networks run (device: default CUDA when available) and how it reports.
    STEPS: the steps a path's until takes."""

    STEPS = ""
    until: str | None = option(None, "Stop after this step: {steps}.")
    device: str | None = option(None, "cpu or cuda for the networks (default: cuda if any).")
    evaluate: bool = option(True, "Score the masks against GT.", flag="--evaluate/--no-evaluate")
    log_to_mlflow: bool = option(True, "Log trainings and evaluation to MLflow.", flag="--mlflow/--no-mlflow")
    run_name: str | None = None  # the evaluation report's name (default: the pipeline's)


# The fields `wsss run` sets itself for every path (from its own splits, device, mlflow...).
RUN_LEVEL = tuple(f.name for f in dataclasses.fields(PathRequest))


@dataclass(frozen=True)
class CamSettings:
    """The AffinityNet path's CAM rows (train-cam -> cams -> pseudo/cam -> affinity-labels):
    its preset, backbone, weights and overrides. GraphNet from tags uses the same, so both
    paths compute those rows once, under one key."""

    __pydantic_config__ = {"extra": "forbid"}

    preset: str = option(
        AUTO, f"{PSA_PRESETS.help()}; auto: paper from 1000 images with a GPU, else small.",
        choices=(AUTO, *PSA_PRESETS.names()),
    )
    backbone: str | None = option(None, "Backbone of both networks (default: the preset's).", choices=BACKBONES.names())
    weights: str | None = option(
        None, "torchvision weights name, checkpoint path, or none (default: the preset's; falls back to random init, loudly)."
    )
    overrides: dict[str, Any] = field(default_factory=dict)  # any AffinityNetPathConfig value by name


@dataclass(frozen=True)
class GraphNetRequest(PathRequest):
    """`wsss graphnet` (Pu et al. 2018). preset: paper, offline or auto (paper when the pretrained
    weights load); backbone / weights: the features stage's CNN (None: the preset's);
    overrides: any GraphNetConfig value by name; cam: tags' CAM rows (the affinitynet path's)."""

    STEPS = "superpixels, features, graphs, seeds, propagation, masks, baselines"
    supervision: str = option(
        "scribbles", "The weak labels to start from; tags: the affinitynet path's CAM stages (run when missing) seed the graph.",
        choices=SUPERVISIONS.names(),
    )
    preset: str = option(
        AUTO, f"{GRAPHNET_PRESETS.help()}; auto: paper when the pretrained weights load, else offline.",
        choices=(AUTO, *GRAPHNET_PRESETS.names()),
    )
    propagation: str = option("gcn", PROPAGATIONS.help() + ".", choices=PROPAGATIONS.names())
    crf: bool = option(False, "Also write <method>-crf masks (dense CRF).", flag="--crf/--no-crf")
    backbone: str | None = option(None, "CNN for node features (default: the preset's, vgg16).", choices=BACKBONES.names())
    weights: str | None = option(
        None, "torchvision weights name, checkpoint path, or none (default: DEFAULT; offline fallback: the CAM classifier)."
    )
    overrides: dict[str, Any] = field(default_factory=dict)
    cam: CamSettings = CamSettings()


@dataclass(frozen=True)
class AffinityNetRequest(PathRequest, CamSettings):
    """`wsss affinitynet` (PSA, Ahn & Kwak 2018): its CAM rows' settings (CamSettings), then
    stride (random-walk grid: 8 as PSA, or 4; None: the preset's), crf (also pseudo/rw-crf)
    and train_threads (torch threads of a CPU training; None: every core)."""

    STEPS = "train-cam, cams, affinity-labels, train-affinitynet, random-walk, masks"
    stride: int | None = option(None, "Random-walk grid stride: 8 (PSA) or 4.", choices=("8", "4"))
    crf: bool = option(True, "Also write pseudo/rw-crf (dense CRF on the walk).", flag="--crf/--no-crf")
    train_threads: int | None = option(None, TRAIN_THREADS_HELP, min=1)

    def cam_settings(self) -> CamSettings:
        return CamSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CamSettings)})


@dataclass(frozen=True)
class SegmentationRequest(PathRequest):
    """`wsss segment`: DeepLabV3 rounds on a pseudo-mask set (labels: its method, e.g.
    gcn-scribbles); the network trains on train_split; overrides: any SegmentationConfig value."""

    STEPS = "round-1, round-2, ..."
    labels: str = option(
        "", "The pseudo masks of round 0: a method of the workspace (gcn-scribbles, rw-crf, ...).", required=True
    )
    rounds: int = option(1, "Rounds: round k trains on round k-1's labels and predicts round k's.", min=1)
    preset: str = option(
        AUTO, f"{SEGMENTATION_PRESETS.help()}; auto: paper from 1000 training images with a GPU, else small.",
        choices=(AUTO, *SEGMENTATION_PRESETS.names()),
    )
    backbone: str | None = option(None, "DeepLabV3 variant (default: the preset's).", choices=SEGMENTATION_ARCHS.names())
    weights: str | None = option(
        None, "Backbone weights: torchvision name, checkpoint path, or none "
        "(offline fallback: the CAM classifier when it fits, else random init).",
    )
    output_stride: int | None = option(None, "8 or 16 (default: the preset's).", choices=("8", "16"))
    train_split: str = option("train", "The split whose labels the network trains on.")
    train_threads: int | None = option(None, TRAIN_THREADS_HELP, min=1)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundsSettings(SegmentationRequest):
    """The run config's segmentation section: rounds (0: none) on each supervision's best pseudo
    masks (wsss_core.registries.BEST_MASKS); paths: on these paths' final masks instead (None: the best masks)."""

    paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 0:
            raise UsageError(f"segmentation.rounds: {self.rounds} is not a number of rounds")
        for name in self.paths or ():
            PATHS.check(name)

    def request(self, **run_level: Any) -> SegmentationRequest:
        """The segment flow's request for one path's rounds."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(SegmentationRequest)}
        return SegmentationRequest(**{**values, **run_level})


@dataclass(frozen=True)
class SuperpixelsRequest(Request):
    """`wsss superpixels`: SLIC as a GraphNet preset computes it (auto: the one `wsss graphnet`
    would pick); overrides: SuperpixelConfig values by name."""

    preset: str = option(
        AUTO, "The GraphNet preset whose SLIC settings to use.", choices=(AUTO, *GRAPHNET_PRESETS.names())
    )
    overrides: dict[str, Any] = field(default_factory=dict)


def upgrade(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    """A request dict remembered before requests were objects, in today's shape: GraphNet's
    flat cam_preset / cam_backbone / cam_weights / cam_overrides became `cam`."""
    if issubclass(kind, GraphNetRequest):
        cam = {name[4:]: values.pop(name) for name in list(values) if name.startswith("cam_")}
        if cam:
            values["cam"] = {**{k: v for k, v in cam.items() if v is not None}, **values.get("cam", {})}
    return values
