"""The GraphNet path's configuration, its presets, and the per-image glue between stages.

The algorithms live in superpixels / graph / seeds / gcn / label_propagation / baselines /
features of this package (and the shared crf); this module holds the typed configs with the
paper's defaults, how a run's config is resolved (preset, weights, overrides), and how a
graph and seeds are stored as plain arrays. How node probabilities become a (CRF-refined)
class mask is wsss_core/graphnet/masks.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from wsss_core.config import apply_overrides
from wsss_core.crf import CRFConfig
from wsss_core.errors import BadInputError
from wsss_core.graphnet.graph import Graph, GraphConfig
from wsss_core.graphnet.label_propagation import LabelPropagationConfig
from wsss_core.graphnet.mixed import MixedSeedConfig
from wsss_core.graphnet.network_configs import FeatureConfig, GCNConfig
from wsss_core.graphnet.seeds import BoxSeedConfig, NodeSeeds, ScribbleSeedConfig, TagSeedConfig
from wsss_core.registries import AUTO, BACKBONES, GRAPHNET_PRESETS, SUPERVISIONS
from wsss_core.graphnet.superpixels import SuperpixelConfig
from wsss_core.weights import fallback_level, pretrained_loads

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class NodeFeatureConfig:
    """What describes a superpixel node. Paper: pooled CNN features alone.

    cnn: pooled CNN feature maps (the `features` stage); colour: mean and std of Lab
    colour; position: centroid y/H, x/W; texture: gradient / LoG statistics and an LBP
    histogram (wsss_core.graphnet.features.texture_features). At least one must be on.
    """

    cnn: bool = True
    pooling: Literal["mean", "max"] = "mean"
    colour: bool = False
    position: bool = False
    texture: bool = False

    def __post_init__(self) -> None:
        if not (self.cnn or self.colour or self.position or self.texture):
            raise ValueError("node features need at least one of cnn, colour, position, texture")

    def feature_config(self) -> FeatureConfig:
        """The wsss_core.graphnet.features config that node_features() reads (pooling, colour, position, texture)."""
        return FeatureConfig(
            pooling=self.pooling, add_colour=self.colour, add_position=self.position, add_texture=self.texture
        )


@dataclass(frozen=True)
class GraphStageConfig:
    """The `graphs` stage: node features and the graph built on them.

    edges: the features the edge weights (and semantic neighbours) are computed from;
    None = the node features themselves (paper).
    """

    nodes: NodeFeatureConfig = NodeFeatureConfig()
    graph: GraphConfig = GraphConfig()
    edges: NodeFeatureConfig | None = None

    @property
    def needs_cnn(self) -> bool:
        return self.nodes.cnn or (self.edges is not None and self.edges.cnn)


@dataclass(frozen=True)
class GraphNetConfig:
    """Every stage config of the GraphNet path. The defaults are the paper's (`paper()`).

    `offline()` is the configuration tuned on the built-in dataset (variant "standard")
    for a machine without pretrained weights; see `offline()`'s docstring.
    """

    backbone: str = "vgg16"  # the CNN of the features stage (run only when graphs.needs_cnn)
    weights: str | None = "DEFAULT"  # torchvision weights name, checkpoint path, or "none"
    superpixels: SuperpixelConfig = SuperpixelConfig()
    graphs: GraphStageConfig = GraphStageConfig()
    scribble_seeds: ScribbleSeedConfig = ScribbleSeedConfig()
    box_seeds: BoxSeedConfig = BoxSeedConfig()
    tag_seeds: TagSeedConfig = TagSeedConfig()
    gcn: GCNConfig = GCNConfig()
    label_propagation: LabelPropagationConfig = LabelPropagationConfig()
    crf: CRFConfig = CRFConfig()

    def seeds_config(self, supervision: str) -> ScribbleSeedConfig | BoxSeedConfig | TagSeedConfig | MixedSeedConfig:
        """The seeds stage's config of a supervision (its registry entry names the field)."""
        return getattr(self, SUPERVISIONS.get(supervision).seeds_config)

    @property
    def mixed_seeds(self) -> MixedSeedConfig:
        """A mixed dataset's seeds: each kind seeded by its own config."""
        return MixedSeedConfig(self.scribble_seeds, self.box_seeds, self.tag_seeds)

    @classmethod
    def paper(cls) -> GraphNetConfig:
        """Pu et al.: CNN node features, binary pruned spatial graph, Kipf's 2-layer GCN."""
        return cls()

    @classmethod
    def offline(cls) -> GraphNetConfig:
        """For a machine without pretrained weights; tuned on `wsss generate` (variant "standard").

        SLIC compactness 30 instead of scikit-image's 10: at 10 the superpixels follow
        the texture noise inside objects and cross object edges, so even labelling each
        superpixel with its true majority class reached only 0.943 mIoU on the tuning set,
        0.986 at 30 (benchmarks/superpixel_ceiling.py); the GCN's masks: 0.877 at 10, 0.923
        at 20, 0.941 at 30, 0.938 at 40, and 0.925 with twice the superpixels at 10.

        Randomly initialised CNN features (even the pipeline's own weakly trained CAM
        classifier) describe these images worse than hand-made statistics, so nodes are
        Lab colour mean + std and texture statistics (28 values) and no CNN runs. Edges
        are weighed by colour alone (texture statistics of small superpixels are noisy
        across boundaries), pruned, similarity-weighted with a bandwidth fitted to colour
        distances (0.01 in (Lab/100)^2 units; the paper's h = feature dimension would weigh
        every edge ~1), plus 10 semantic edges per node. A few seed nodes per image are too
        little to learn what the classes look like from such features, so one GCN (64
        hidden units, no dropout or weight decay) is fitted on the seeds of every image
        (100 epochs) and labels all of them; per-image fine-tuning (epochs > 0) lowered
        mIoU on the tuning set (0.878 -> 0.845 with 30 epochs).
        """
        colour = NodeFeatureConfig(cnn=False, colour=True)
        return cls(
            superpixels=SuperpixelConfig(compactness=30.0),
            graphs=GraphStageConfig(
                nodes=NodeFeatureConfig(cnn=False, colour=True, texture=True),
                graph=GraphConfig(adjacency="weighted", bandwidth=0.01, semantic_k=10),
                edges=colour,
            ),
            gcn=GCNConfig(hidden=64, dropout=0.0, weight_decay=0.0, epochs=0, pretrain_epochs=100),
        )


@dataclass(frozen=True)
class ResolvedConfig:
    """The config a GraphNet run uses, the preset it came from and why that preset."""

    config: GraphNetConfig
    preset: str
    why: str


def resolve_config(
    preset: str = AUTO,
    backbone: str | None = None,
    weights: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ResolvedConfig:
    """The run's config: a preset, then --backbone / --weights, then any overrides by name.

    "auto" is "paper" when the requested pretrained weights load here, else "offline"
    (said loudly: without pretrained weights the paper's CNN node features are noise).
    backbone / weights None: the preset's.
    """
    requested = GraphNetConfig()
    backbone = backbone if backbone is not None else requested.backbone
    weights = weights if weights is not None else requested.weights
    if preset == AUTO:
        loads, note = pretrained_loads(BACKBONES.check(backbone), weights)
        preset, why = ("paper", f"auto: {note}") if loads else ("offline", f"auto: {note}")
        if not loads:  # the flow says it on the console; this goes to the logs
            logger.log(fallback_level(), "%s: using the offline preset (colour + texture node features, no CNN)", note)
    else:
        why = "asked for"
    config = GRAPHNET_PRESETS.get(preset)()
    config = replace(config, backbone=BACKBONES.check(backbone), weights=weights)
    return ResolvedConfig(apply_overrides(config, overrides, "graphnet"), preset, why)


def run_settings(
    resolved: ResolvedConfig, supervision: str, propagation: str, crf: bool, features: dict[str, Any] | None
) -> dict[str, Any]:
    """What a GraphNet run is, as a person reads it (MLflow params): the method, supervision,
    propagation, preset, CNN and weights (requested and used; "none" without a CNN stage),
    then the config sections this request uses, by the names `--set` takes.

    features: the features stage's weights record (WeightsChoice.record()), None without one.
    """
    from wsss_core.config import config_to_dict
    from wsss_core.registries import PROPAGATIONS, mask_method_name

    config = config_to_dict(resolved.config)
    seeds = SUPERVISIONS.get(supervision).seeds_config
    propagation_section = "gcn" if PROPAGATIONS.check(propagation) == "gcn" else "label_propagation"
    seed_sections = [seeds] if seeds in config else ["scribble_seeds", "box_seeds", "tag_seeds"]  # mixed: all three
    sections = ["superpixels", "graphs", *seed_sections, propagation_section] + (["crf"] if crf else [])
    weights = {k: v for k, v in (features or {}).items() if k in ("requested", "used", "fallback")}
    return {
        "path": f"graphnet-{supervision}", "method": mask_method_name(supervision, propagation),
        "supervision": supervision, "propagation": propagation, "preset": resolved.preset, "crf": crf,
        "backbone": (features or {}).get("backbone", "none"),
        "weights": weights or {"requested": resolved.config.weights, "used": "none"},
        **{section: config[section] for section in sections},
    }


def baseline_settings(supervision: str) -> dict[str, Any]:
    """The settings of a supervision's baseline masks (nothing learned, nothing tuned)."""
    return {"path": f"graphnet-{supervision}", "method": SUPERVISIONS.get(supervision).baseline, "supervision": supervision}


# ----------------------------------------------------------------------------- arrays


GRAPH_ARRAYS = ("node_features", "edges", "weights")
SEED_ARRAYS = ("labels", "candidates")


def graph_to_arrays(node_features: np.ndarray, graph: Graph) -> dict[str, np.ndarray]:
    """A graph and its node features as named plain arrays (for the workspace)."""
    return {
        "node_features": np.asarray(node_features, dtype=np.float32),
        "edges": np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2),
        "weights": np.asarray(graph.weights, dtype=np.float32),
    }


def graph_from_arrays(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, Graph]:
    """Inverse of graph_to_arrays: (node features (n, D), Graph)."""
    features = np.asarray(arrays["node_features"], dtype=np.float32)
    edges = np.asarray(arrays["edges"], dtype=np.int64).reshape(-1, 2)
    weights = np.asarray(arrays["weights"], dtype=np.float32)
    if len(edges) != len(weights):
        raise BadInputError("graph", f"{len(edges)} edges but {len(weights)} weights")
    if edges.size and (edges.min() < 0 or edges.max() >= features.shape[0]):
        raise BadInputError("graph", f"edge endpoints outside 0..{features.shape[0] - 1}")
    return features, Graph(n_nodes=features.shape[0], edges=edges, weights=weights)


def seeds_to_arrays(seeds: NodeSeeds) -> dict[str, np.ndarray]:
    return {"labels": seeds.labels.astype(np.int64), "candidates": seeds.candidates.astype(bool)}


def seeds_from_arrays(arrays: dict[str, np.ndarray]) -> NodeSeeds:
    return NodeSeeds(labels=np.asarray(arrays["labels"], dtype=np.int64), candidates=np.asarray(arrays["candidates"], dtype=bool))
