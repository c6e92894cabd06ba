"""The choices a user makes by name: the Registry class and one registry per choice.

Like torchgeo's models/api.py or smp's create_model: every choice a user makes by name
(backbone, supervision, propagation, preset, engine, pseudo-mask method, pipeline path) is
an entry of one registry: the CLI shows the names in --help, an unknown name gets one error
listing the valid ones, and flows and the evaluation read the same entries instead of
testing strings. An entry's target may be a "module:attribute" string, imported only when
used, so this module stays cheap to import (the CLI starts without importing torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from wsss_core.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    target: T
    help: str = ""


class UnknownChoiceError(UsageError):
    def __init__(self, kind: str, name: object, names: tuple[str, ...]):
        self.kind, self.name, self.names = kind, name, names
        super().__init__(f"unknown {kind} {name!r} (choose {', '.join(names)})")


class Registry(Generic[T]):
    """Names -> targets, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, target: T, help: str = "") -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = Entry(name, target, help)
        return target

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownChoiceError(self.kind, name, self.names()) from None

    def get(self, name: str) -> T:
        """The target; a "module:attr.attr" string target is imported now."""
        target = self.entry(name).target
        return resolve_target(target) if isinstance(target, str) and ":" in target else target

    def check(self, name: str) -> str:
        self.entry(name)
        return name

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(list(self._entries.values()))

    def help(self) -> str:
        """"a (what a is), b (...)" for --help texts."""
        return ", ".join(f"{e.name} ({e.help})" if e.help else e.name for e in self)


def resolve_target(target: str) -> Any:
    module_name, _, attributes = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for attribute in attributes.split("."):
        value = getattr(value, attribute)
    return value


# ----------------------------------------------------------------------------- choices

AUTO = "auto"  # a preset chosen by the pipeline from the machine and the data


def choose_sized_preset(presets: Registry, preset: str, n_images: int, has_gpu: bool, paper_min_images: int) -> tuple[str, str]:
    """(preset name, why) for a path with "paper" and "small" presets: "auto" is "paper" from
    paper_min_images images with a GPU, else "small"."""
    if preset != AUTO:
        return presets.check(preset), "asked for"
    if n_images >= paper_min_images and has_gpu:
        return "paper", f"auto: {n_images} images and a GPU"
    reason = f"{n_images} images < {paper_min_images}" if n_images < paper_min_images else "no GPU"
    return "small", f"auto: {reason}"

# ----------------------------------------------------------------------------- engines

ENGINES: Registry[None] = Registry("engine")
ENGINES.register("threads", None, "a thread pool in this process")
ENGINES.register("processes", None, "a process pool on this machine")
ENGINES.register("dask", None, "a Dask LocalCluster, or the scheduler at --dask-address")

# ----------------------------------------------------------------------------- backbones

BACKBONES: Registry[Any] = Registry("backbone")
BACKBONES.register("vgg16", "wsss_core.backbones:vgg16_backbone", "GraphNet's")
for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    BACKBONES.register(_name, f"wsss_core.backbones:{_name}_backbone")

# ----------------------------------------------------------------------------- GraphNet


@dataclass(frozen=True)
class Supervision:
    """A kind of weak label for the GraphNet path.

    array: the workspace array holding it; seeds: f(superpixels, array, num_classes, config)
    -> NodeSeeds; seeds_config: the GraphNetConfig field of that config; baseline: the
    name of its non-learned mask method, made by baseline_mask(array, image shape), or, when
    baseline_mask is None, by the stages that seeds_from comes from (tags: pseudo/cam).
    seeds_from: a stage of another path whose array the seeds function also reads (its
    fifth argument); the GraphNet table then includes that path's rows up to it.
    """

    array: str
    seeds: str
    seeds_config: str
    baseline: str
    baseline_mask: str | None
    seeds_from: str | None = None


SUPERVISIONS: Registry[Supervision] = Registry("supervision")
SUPERVISIONS.register(
    "scribbles",
    Supervision(
        "scribbles", "wsss_core.graphnet.seeds:seeds_from_scribbles", "scribble_seeds",
        "nearest-scribbles", "wsss_core.graphnet.baselines:baseline_from_scribbles",
    ),
    "GraphNet from scribbles",
)
SUPERVISIONS.register(
    "boxes",
    Supervision(
        "boxes", "wsss_core.graphnet.seeds:seeds_from_boxes", "box_seeds",
        "box-rectangles", "wsss_core.graphnet.baselines:baseline_from_boxes",
    ),
    "GraphNet from boxes",
)
SUPERVISIONS.register(
    "tags",
    Supervision(
        "tags", "wsss_core.graphnet.seeds:seeds_from_affinity_labels", "tag_seeds", "cam", None,
        seeds_from="affinity-labels",
    ),
    "GraphNet seeded by the AffinityNet path's confident CAM labels",
)
SUPERVISIONS.register(
    "mixed",
    Supervision(
        "tags", "wsss_core.graphnet.mixed:mixed_seeds", "mixed_seeds", "cam", None, seeds_from="affinity-labels",
    ),
    "a mixed dataset: each image seeded by the labels it has (scribbles and/or boxes, else its CAM), one shared GCN",
)


@dataclass(frozen=True)
class Propagation:
    """How labels spread over the superpixel graph; prefix names its masks (<prefix>-<supervision>)."""

    prefix: str


PROPAGATIONS: Registry[Propagation] = Registry("propagation")
PROPAGATIONS.register("gcn", Propagation("gcn"), "the paper's GCN")
PROPAGATIONS.register("label-propagation", Propagation("labelprop"), "Zhou et al. 2004, same graph")

GRAPHNET_PRESETS: Registry[str] = Registry("GraphNet preset")
GRAPHNET_PRESETS.register("paper", "wsss_core.graphnet.config:GraphNetConfig.paper", "CNN node features, per-image GCN")
GRAPHNET_PRESETS.register(
    "offline", "wsss_core.graphnet.config:GraphNetConfig.offline", "colour + texture nodes, dataset-level GCN"
)

# ----------------------------------------------------------------------------- AffinityNet (PSA)

PSA_PRESETS: Registry[str] = Registry("AffinityNet preset")
PSA_PRESETS.register("paper", "wsss_core.psa.config:AffinityNetPathConfig.paper", "PSA's schedule, ResNet-50")
PSA_PRESETS.register("small", "wsss_core.psa.config:AffinityNetPathConfig.small", "ResNet-18 from scratch, CPU-sized")

# ----------------------------------------------------------------------------- segmentation rounds


@dataclass(frozen=True)
class SegmentationArch:
    """A DeepLabV3 variant (wsss_core.segmentation.model): the torchvision classification
    backbone whose weights start it, and the output strides it can be built at."""

    backbone: str
    strides: tuple[int, ...]


SEGMENTATION_ARCHS: Registry[SegmentationArch] = Registry("segmentation network")
SEGMENTATION_ARCHS.register("deeplabv3_resnet50", SegmentationArch("resnet50", (8, 16)), "torchvision's default")
SEGMENTATION_ARCHS.register("deeplabv3_resnet101", SegmentationArch("resnet101", (8, 16)))
SEGMENTATION_ARCHS.register(
    "deeplabv3_mobilenet_v3_large", SegmentationArch("mobilenet_v3_large", (16,)), "torchvision's, stride 16 only"
)
SEGMENTATION_ARCHS.register(
    "deeplabv3_resnet18", SegmentationArch("resnet18", (8, 16)), "not in torchvision; fits the small CAM backbone"
)

SEGMENTATION_PRESETS: Registry[str] = Registry("segmentation preset")
SEGMENTATION_PRESETS.register(
    "paper", "wsss_core.segmentation.config:SegmentationConfig.paper", "DeepLabV3's VOC schedule, ResNet-50"
)
SEGMENTATION_PRESETS.register(
    "small", "wsss_core.segmentation.config:SegmentationConfig.small", "CPU-sized"
)

# ----------------------------------------------------------------------------- pseudo-mask methods


@dataclass(frozen=True)
class MaskMethod:
    """A pseudo-mask method: pseudo/<name> (and pseudo/<name>-crf), which path makes it, from what."""

    path: str
    supervision: str
    baseline: bool = False


MASK_METHODS: Registry[MaskMethod] = Registry("pseudo-mask method")
for _supervision in SUPERVISIONS:
    if _supervision.target.baseline_mask is not None:  # else another path's method (tags: cam)
        MASK_METHODS.register(
            _supervision.target.baseline, MaskMethod("graphnet", _supervision.name, baseline=True),
            f"baseline from {_supervision.name}",
        )
    for _propagation in PROPAGATIONS:
        _name = f"{_propagation.target.prefix}-{_supervision.name}"
        MASK_METHODS.register(
            _name, MaskMethod("graphnet", _supervision.name), f"{_propagation.name} from {_supervision.name}"
        )
MASK_METHODS.register("cam", MaskMethod("affinitynet", "tags"), "CAM with a fixed background score")
MASK_METHODS.register("rw", MaskMethod("affinitynet", "tags"), "CAM + AffinityNet random walk")
MASK_METHODS.register("mixed", MaskMethod("graphnet", "mixed"), "each image's mask from its strongest labels")

CRF_SUFFIX = "-crf"

# ----------------------------------------------------------------------------- each supervision's best masks

# The masks `wsss run` hands on to segmentation rounds by default: per supervision, its mask
# methods best first, and the run takes the first one it made. A fixed default, chosen once
# without GT at run time by benchmarks/best_masks.py on datasets nobody tuned on (three fresh
# `wild` seeds and the holdout variant, 60 images each, the paths as the demo runs them).
# Mean train mIoU over the four (worst loss to the supervision's best on one dataset, points):
#   scribbles  gcn-scribbles 77.8 (0.0), nearest-scribbles 27.0 (58.0)
#   boxes      gcn-boxes 78.0 (0.0), box-rectangles 66.2 (14.0)
#   tags       gcn-tags 20.5 (3.0: 8.7 against cam 11.7 on wild 124129), cam 16.7 (8.4),
#              rw 15.0 (10.0), rw-crf 13.7 (12.1)
# Rule: the winner has the highest mean train mIoU over the four and is never more than 5 points
# below the best of its supervision on any one of them; the rest follow by mean train mIoU (they
# matter only to a run that did not make the winner, e.g. `--path affinitynet` alone: pseudo/cam)
# (docs/results.md, "Each supervision's best masks").
# A path's final masks that were not measured (another propagation, a GraphNet "-crf" set: what
# its request asked for) take its learned masks' place. mixed: pseudo/mixed by design (benchmarks/mixed.py).
BEST_MASKS: dict[str, tuple[str, ...]] = {
    "scribbles": ("gcn-scribbles", "nearest-scribbles"),
    "boxes": ("gcn-boxes", "box-rectangles"),
    "tags": ("gcn-tags", "cam", "rw", "rw-crf"),  # cam beat rw and rw-crf on all four (few images: weak CAMs)
    "mixed": ("mixed", "gcn-mixed"),
}


def best_masks(supervision: str, made: Collection[str], finals: Collection[str] = ()) -> str | None:
    """The supervision's best mask stage among those made (pseudo/<method>[-crf]), by BEST_MASKS;
    None when none of them is ranked. finals: the paths' final masks; one the benchmark did not
    measure (another propagation, a GraphNet -crf set: what the path's request asked for) takes
    the place of its path's learned masks in the ranking, just ahead of them."""
    ranked = BEST_MASKS.get(supervision, ())

    def rank(stage: str) -> tuple[int, int] | None:
        name = stage.removeprefix("pseudo/")
        if name in ranked:
            return ranked.index(name), 1
        found = mask_method_of_stage(stage)
        if stage in finals and found is not None:
            learned = [i for i, r in enumerate(ranked) if r in MASK_METHODS and not MASK_METHODS.get(r).baseline
                       and MASK_METHODS.get(r).path == found[1].path]
            return (learned[0], 0) if learned else None
        return None

    ranks = {stage: rank(stage) for stage in made}
    return min((s for s in made if ranks[s] is not None), key=lambda s: ranks[s], default=None)


def mask_method_name(supervision: str, propagation: str) -> str:
    """gcn-scribbles, labelprop-boxes, ...: the pseudo-mask method of a GraphNet request."""
    return f"{PROPAGATIONS.get(propagation).prefix}-{SUPERVISIONS.check(supervision)}"


def mask_method_of_stage(stage: str) -> tuple[str, MaskMethod] | None:
    """("gcn-scribbles", entry) for pseudo/gcn-scribbles, pseudo/gcn-scribbles-crf or a round
    of them (pseudo/gcn-scribbles/round-1); None otherwise."""
    if not stage.startswith("pseudo/"):
        return None
    name = stage.removeprefix("pseudo/").split("/")[0]
    name = name.removesuffix(CRF_SUFFIX)
    return (name, MASK_METHODS.get(name)) if name in MASK_METHODS else None


ROUND_PREFIX = "round-"


def mask_round_of_stage(stage: str) -> int | None:
    """The segmentation round that made a mask stage: 0 for the pseudo masks themselves
    (pseudo/<method>[-crf]), k for pseudo/<method>[-crf]/round-<k>; None for other stages."""
    if mask_method_of_stage(stage) is None:
        return None
    parts = stage.split("/")
    if len(parts) == 2:
        return 0
    if len(parts) == 3 and parts[2].startswith(ROUND_PREFIX) and parts[2].removeprefix(ROUND_PREFIX).isdigit():
        return int(parts[2].removeprefix(ROUND_PREFIX))
    return None


def round_zero_stage(stage: str) -> str:
    """The pseudo masks a round started from: pseudo/<method>[-crf] of pseudo/<method>[-crf]/round-<k>."""
    return "/".join(stage.split("/")[:2])


def mask_stage_order(stage: str) -> tuple:
    """Sort key of mask stages: baselines first, then by method, CRF after plain, rounds in order."""
    found = mask_method_of_stage(stage)
    base = round_zero_stage(stage)
    return (not (found and found[1].baseline), found[0] if found else stage, base.endswith(CRF_SUFFIX),
            mask_round_of_stage(stage) or 0, stage)


# ----------------------------------------------------------------------------- pipeline paths


@dataclass(frozen=True)
class PathSpec:
    """A path of the whole pipeline (`wsss run`).

    method: the method it runs, "graphnet" or "affinitynet" (flows/run.py runs that method's
    flow); needs: the weak label it needs; settings: the section of the run config that is
    the flow's request (wsss_core.requests); config: the typed config its overrides apply to;
    parameters: request fields it fixes. cam_settings: the section whose preset, backbone,
    weights and overrides make the CAM rows this path shares with another path (its request's
    `cam`, so both paths compute them once, under one key).
    """

    method: str
    needs: str
    settings: str
    config: str
    parameters: dict[str, Any] = field(default_factory=dict)
    cam_settings: str | None = None


PATHS: Registry[PathSpec] = Registry("path")
PATHS.register(
    "graphnet-scribbles",
    PathSpec(
        "graphnet", "scribbles", "graphnet", "wsss_core.graphnet.config:GraphNetConfig",
        {"supervision": "scribbles"},
    ),
    "GraphNet from scribbles",
)
PATHS.register(
    "graphnet-boxes",
    PathSpec(
        "graphnet", "boxes", "graphnet", "wsss_core.graphnet.config:GraphNetConfig",
        {"supervision": "boxes"},
    ),
    "GraphNet from boxes",
)
PATHS.register(
    "affinitynet",
    PathSpec("affinitynet", "tags", "affinitynet", "wsss_core.psa.config:AffinityNetPathConfig"),
    "AffinityNet (PSA) from tags",
)
PATHS.register(
    "graphnet-tags",
    PathSpec(
        "graphnet", "tags", "graphnet", "wsss_core.graphnet.config:GraphNetConfig",
        {"supervision": "tags"}, cam_settings="affinitynet",
    ),
    "GraphNet seeded by the AffinityNet path's confident CAM labels (shares its CAM stages)",
)
PATHS.register(
    "graphnet-mixed",
    PathSpec(
        "graphnet", "mixed", "graphnet", "wsss_core.graphnet.config:GraphNetConfig",
        {"supervision": "mixed"}, cam_settings="affinitynet",
    ),
    "a dataset whose images carry different labels: pseudo/mixed, every image from its strongest ones",
)
