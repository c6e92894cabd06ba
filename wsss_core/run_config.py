"""The whole pipeline's settings (`wsss run`): which paths, and any value of any stage.

A run config file (YAML, see examples/run.yaml) is read into RunConfig; CLI options and
a deployment's parameters are overrides on top of it, by the same names. Defaults are
the papers' values through each path's presets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss_core.config import apply_overrides
from wsss_core.data.label_mix import LabelMix, parse_label_mix
from wsss_core.errors import UsageError
from wsss_core.registries import PATHS
from wsss_core.requests import RUN_LEVEL, AffinityNetRequest, GraphNetRequest, RoundsSettings

SEGMENTATION_CONFIG = "wsss_core.segmentation.config:SegmentationConfig"
# The demo's run config (`wsss demo`): sizes and schedules chosen to fit the 2-core CPU.
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"


@dataclass(frozen=True)
class IngestSettings:
    """Read a dataset first (only when root is set); images already ingested are skipped."""

    root: str | None = None
    format: str = "voc"
    splits: tuple[str, ...] = ("train",)
    scribbles_dir: str | None = None
    image_dir: str | None = None
    max_side: int = 4096


@dataclass(frozen=True)
class GenerateSettings:
    """Write the built-in synthetic dataset (`wsss generate`) to ingest.root before ingesting it,
    unless that folder holds it already (the demo). images 0: generate nothing.
    label_mix: which weak labels each image keeps, as `wsss generate --label-mix` takes it
    (e.g. "scribbles=0.2,boxes=0.2,tags=0.6"); None: every image keeps every kind."""

    images: int = 0
    width: int = 256
    height: int = 192
    seed: int = 0
    variant: str = "standard"
    label_mix: str | None = None

    def __post_init__(self) -> None:
        if self.images < 0:
            raise UsageError(f"generate.images: {self.images} is not a number of images")
        if self.label_mix is not None:
            parse_label_mix(self.label_mix)  # a malformed mix is refused when the config is read

    def parsed_label_mix(self) -> LabelMix | None:
        return parse_label_mix(self.label_mix) if self.label_mix else None


# What `wsss run` decides for each path itself (its splits, device, mlflow; the path's supervision,
# labels and CAM rows): a section that sets one is refused rather than silently overridden.
RUN_DECIDES = {
    "graphnet": (*RUN_LEVEL, "supervision", "cam"),
    "affinitynet": RUN_LEVEL,
    "segmentation": (*RUN_LEVEL, "labels"),
}


@dataclass(frozen=True)
class RunConfig:
    """paths: None = every path the dataset's weak labels allow. splits: None = every ingested image.
    graphnet, affinitynet, segmentation: the paths' own request types (wsss_core.requests)."""

    ingest: IngestSettings = IngestSettings()
    generate: GenerateSettings = GenerateSettings()
    paths: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    graphnet: GraphNetRequest = GraphNetRequest()
    affinitynet: AffinityNetRequest = AffinityNetRequest()
    segmentation: RoundsSettings = RoundsSettings()
    evaluate: bool = True
    mlflow: bool = True
    device: str | None = None
    execution: dict[str, Any] = field(default_factory=dict)  # engine, workers, dask_address, batch_size, progress

    def __post_init__(self) -> None:
        for name in self.paths or ():
            PATHS.check(name)
        if self.generate.images and not self.ingest.root:
            raise UsageError("generate: set ingest.root, the folder to write the built-in dataset to")
        for section, names in RUN_DECIDES.items():
            values, defaults = getattr(self, section), type(getattr(self, section))()
            for name in names:
                if getattr(values, name) != getattr(defaults, name):
                    raise UsageError(f"run: {section}.{name}: the run sets it for every path (a top-level setting, or none)")


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML run config file as a mapping (UsageError naming the file when unreadable)."""
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise UsageError(f"{path}: cannot read the run config ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, Mapping):
        raise UsageError(f"{path}: a run config is a mapping of settings, not {type(loaded).__name__}")
    return dict(loaded)


def resolve_run_config(config_file: str | None, settings: Mapping[str, Any] | None) -> RunConfig:
    """Defaults, then the file's settings, then `settings` (CLI options, deployment parameters)."""
    config = RunConfig()
    if config_file:
        config = apply_overrides(config, read_run_config(config_file), f"{config_file}: run")
    return apply_overrides(config, settings, "run")


def check_overrides(config: RunConfig) -> None:
    """Every path's overrides name real settings: a typo is refused before any work starts."""
    from wsss_core.registries import resolve_target

    for name in PATHS.names():
        spec = PATHS.get(name)
        section = getattr(config, spec.settings)
        apply_overrides(resolve_target(spec.config)(), section.overrides, f"run: {spec.settings}.overrides")
    rounds = resolve_target(SEGMENTATION_CONFIG)()
    apply_overrides(rounds, config.segmentation.overrides, "run: segmentation.overrides")


def applicable_paths(requested: tuple[str, ...] | None, weak_labels: set[str]) -> tuple[list[str], dict[str, str]]:
    """(paths to run, {path: why skipped}): a path runs when the dataset has the weak label it needs."""
    chosen, skipped = [], {}
    for name in requested if requested is not None else PATHS.names():
        needs = PATHS.get(name).needs
        if needs in weak_labels:
            chosen.append(name)
        else:
            skipped[name] = "its images all carry the same labels" if needs == "mixed" else f"the dataset has no {needs}"
    return chosen, skipped
