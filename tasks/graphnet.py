"""Batched tasks of the GraphNet path: features, graphs, seeds, propagation, masks, baselines.

Stages and what they write (one array group per stage):

    features/<id>                       float16 (D, ceil(H/8), ceil(W/8)) CNN feature map
    graphs/<id>/{node_features,edges,weights}
    seeds/<supervision>/<id>/{labels,candidates}
    nodes/<method>/<id>                 float32 (n_nodes, C) node class probabilities
    pseudo/<method>/<id>                uint8 HxW pseudo mask (also <method>-crf and the baselines)

The feature and GCN tasks work on the whole batch at once (one backbone pass over the
batch's images, one block-diagonal GCN); each image is still written, marked and, when
it fails, recorded on its own through run_batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task

from tasks.common import STAGE_TASK_OPTIONS, resolve_device, run_batch_in_task, run_block_in_task, single_torch_thread
from wsss_core.backbones import Backbone, build_backbone
from wsss_core.graphnet.baselines import box_rectangles, nearest_scribble_fill
from wsss_core.crf import CRFConfig
from wsss_core.errors import BadInputError
from wsss_core.graphnet.features import extract_feature_maps, node_features
from wsss_core.graphnet.gcn import GCNConfig, GCNWeights, GraphInput, pretrain_gcn, propagate_gcn
from wsss_core.graphnet.graph import build_graph
from wsss_core.graphnet.config import (
    GRAPH_ARRAYS,
    SEED_ARRAYS,
    FeatureSource,
    GraphStageConfig,
    NodeFeatureConfig,
    ScribbleSeedConfig,
    crf_node_mask,
    graph_from_arrays,
    graph_to_arrays,
    node_mask,
    seeds_from_arrays,
    seeds_to_arrays,
)
from wsss_core.graphnet.label_propagation import LabelPropagationConfig, propagate_labels
from wsss_core.runner import BatchReport
from wsss_core.graphnet.seeds import BoxSeedConfig, box_seeds, drawn_classes_only, scribble_seeds
from wsss_core.store import Workspace

FEATURES = "features"
GRAPHS = "graphs"


def seeds_stage(supervision: str) -> str:
    return f"seeds/{supervision}"


def nodes_stage(method: str) -> str:
    return f"nodes/{method}"


def pseudo_stage(method: str) -> str:
    return f"pseudo/{method}"


@lru_cache(maxsize=2)
def cached_backbone(backbone: str, weights: str, device: str) -> Backbone:
    """One backbone per (name, weights, device) and process: built once, reused by every batch."""
    return build_backbone(backbone, weights).to(device).eval()


def read_named(workspace: Workspace, stage: str, image_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: workspace.read_array(stage, image_id, name) for name in names}


def num_classes(workspace: Workspace) -> int:
    return len(workspace.classes)


# ----------------------------------------------------------------------------- features


@task(name="features-batch", tags=["gpu"], **STAGE_TASK_OPTIONS)
def features_batch(
    workspace: Workspace,
    source: FeatureSource,
    key: str,
    image_ids: list[str],
    device: str | None = None,
    images_per_pass: int = 8,
) -> BatchReport:
    """CNN feature maps of the batch's images, several images per forward pass."""
    target = resolve_device(device)
    backbone = cached_backbone(source.backbone, source.weights, str(target))

    def compute(images: list[np.ndarray]) -> list[np.ndarray]:
        return extract_feature_maps(backbone, images, target, batch_size=images_per_pass)

    def write(image_id: str, feature_map: np.ndarray) -> None:
        workspace.write_array(FEATURES, image_id, feature_map.astype(np.float16))

    load = lambda image_id: workspace.read_array("images", image_id)  # noqa: E731
    return run_block_in_task(workspace, FEATURES, key, image_ids, load, compute, write)


# ----------------------------------------------------------------------------- graphs


@task(name="graphs-batch", tags=["cpu"], **STAGE_TASK_OPTIONS)
def graphs_batch(workspace: Workspace, config: GraphStageConfig, key: str, image_ids: list[str]) -> BatchReport:
    """Node features (pooled CNN features and/or colour, position) and the superpixel graph."""

    def step(image_id: str) -> None:
        superpixels = workspace.read_array("superpixels", image_id)
        feature_map = workspace.read_array(FEATURES, image_id) if config.needs_cnn else None
        image = workspace.read_array("images", image_id)
        n_nodes = int(superpixels.max()) + 1

        def describe(nodes: NodeFeatureConfig) -> np.ndarray:
            return node_features(feature_map if nodes.cnn else None, image, superpixels, n_nodes, nodes.feature_config())

        features = describe(config.nodes)
        graph = build_graph(superpixels, features if config.edges is None else describe(config.edges), config.graph)
        for name, array in graph_to_arrays(features, graph).items():
            workspace.write_array(GRAPHS, image_id, array, name=name)

    return run_batch_in_task(workspace, GRAPHS, key, image_ids, step)


# ----------------------------------------------------------------------------- seeds


@task(name="seeds-batch", tags=["cpu"], **STAGE_TASK_OPTIONS)
def seeds_batch(
    workspace: Workspace,
    supervision: str,
    config: BoxSeedConfig,
    key: str,
    image_ids: list[str],
    scribble_config: ScribbleSeedConfig = ScribbleSeedConfig(),
) -> BatchReport:
    """Seed labels and candidate classes of every node, from scribbles or from boxes."""
    stage = seeds_stage(supervision)
    classes = num_classes(workspace)

    def step(image_id: str) -> None:
        superpixels = workspace.read_array("superpixels", image_id)
        n_nodes = int(superpixels.max()) + 1
        if supervision == "scribbles":
            if not workspace.has_array("scribbles", image_id):
                raise BadInputError(image_id, "no scribbles for this image")
            scribble = workspace.read_array("scribbles", image_id)
            seeds = scribble_seeds(superpixels, scribble, classes, n_nodes)
            if scribble_config.drawn_classes_only:
                seeds = drawn_classes_only(seeds)
        else:
            seeds = box_seeds(superpixels, workspace.read_array("boxes", image_id), classes, None, config, n_nodes)
        if not seeds.labelled.any():
            raise BadInputError(image_id, f"no node is seeded by its {supervision}")
        for name, array in seeds_to_arrays(seeds).items():
            workspace.write_array(stage, image_id, array, name=name)

    return run_batch_in_task(workspace, stage, key, image_ids, step)


# ----------------------------------------------------------------------------- propagation


def load_graph_input(workspace: Workspace, supervision: str, image_id: str) -> GraphInput:
    features, graph = graph_from_arrays(read_named(workspace, GRAPHS, image_id, GRAPH_ARRAYS))
    seeds = seeds_from_arrays(read_named(workspace, seeds_stage(supervision), image_id, SEED_ARRAYS))
    if seeds.n_nodes != graph.n_nodes:
        raise BadInputError(image_id, f"{seeds.n_nodes} seeded nodes but the graph has {graph.n_nodes}")
    return GraphInput(features, graph, seeds)


@task(name="gcn-batch", tags=["gpu"], **STAGE_TASK_OPTIONS)
def gcn_batch(
    workspace: Workspace,
    method: str,
    supervision: str,
    config: GCNConfig,
    key: str,
    image_ids: list[str],
    device: str | None = None,
    init_path: str | None = None,
) -> BatchReport:
    """One GCN per image, the whole batch trained at once as a block-diagonal graph.

    init_path: the shared weights of gcn_pretrain (.npz) every image's GCN starts from.
    """
    stage = nodes_stage(method)
    target = resolve_device(device)
    init = load_gcn_weights(init_path) if init_path else None

    def compute(batch: list[GraphInput]) -> list[np.ndarray]:
        return propagate_gcn(batch, config, target, init=init)

    def write(image_id: str, probabilities: np.ndarray) -> None:
        workspace.write_array(stage, image_id, probabilities.astype(np.float32))

    with single_torch_thread(target):
        return run_block_in_task(
            workspace, stage, key, image_ids, lambda i: load_graph_input(workspace, supervision, i), compute, write
        )


def gcn_weights_path(workspace: Workspace, method: str, key: str) -> Path:
    return workspace.path / "models" / "gcn" / f"{method}-{key}.npz"


def load_gcn_weights(path: str | Path) -> GCNWeights:
    with np.load(path) as arrays:
        return GCNWeights.from_arrays(dict(arrays))


@task(name="gcn-pretrain", tags=["gpu"], persist_result=False)
def gcn_pretrain(
    workspace: Workspace, method: str, supervision: str, config: GCNConfig, key: str, image_ids: list[str],
    device: str | None = None,
) -> str:
    """One shared GCN fitted on the seeds of all the given images; returns its .npz path.

    Reuses the file when one of the same key exists; written atomically, so a crash
    leaves either no file or a whole one.
    """
    path = gcn_weights_path(workspace, method, key)
    if path.is_file():
        return str(path)
    target = resolve_device(device)
    items = []
    for image_id in image_ids:
        try:
            items.append(load_graph_input(workspace, supervision, image_id))
        except Exception as error:  # noqa: BLE001 - a bad image is left out, recorded by its own stage
            get_run_logger().warning("gcn-pretrain: leaving out %s: %s", image_id, error)
    if not items:
        raise BadInputError(workspace.path, "no image with a graph and seeds to pretrain the GCN on")
    with single_torch_thread(target):
        weights = pretrain_gcn(items, config, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **weights.to_arrays())
    os.replace(partial, path)
    return str(path)


@task(name="label-propagation-batch", tags=["cpu"], **STAGE_TASK_OPTIONS)
def label_propagation_batch(
    workspace: Workspace,
    method: str,
    supervision: str,
    config: LabelPropagationConfig,
    key: str,
    image_ids: list[str],
) -> BatchReport:
    """Zhou et al.'s label propagation on the same graph and seeds as the GCN."""
    stage = nodes_stage(method)

    def step(image_id: str) -> None:
        item = load_graph_input(workspace, supervision, image_id)
        workspace.write_array(stage, image_id, propagate_labels(item.graph, item.seeds, config))

    return run_batch_in_task(workspace, stage, key, image_ids, step)


# ----------------------------------------------------------------------------- masks


@task(name="masks-batch", tags=["cpu"], **STAGE_TASK_OPTIONS)
def masks_batch(
    workspace: Workspace, method: str, source: str, crf: CRFConfig | None, key: str, image_ids: list[str]
) -> BatchReport:
    """pseudo/<method>: the node probabilities of nodes/<source> painted to pixels (optionally dense CRF)."""
    stage = pseudo_stage(method)

    def step(image_id: str) -> None:
        superpixels = workspace.read_array("superpixels", image_id)
        probabilities = workspace.read_array(nodes_stage(source), image_id)
        if crf is None:
            mask = node_mask(superpixels, probabilities)
        else:
            mask = crf_node_mask(workspace.read_array("images", image_id), superpixels, probabilities, crf)
        workspace.write_array(stage, image_id, mask)

    return run_batch_in_task(workspace, stage, key, image_ids, step)


@task(name="baseline-batch", tags=["cpu"], **STAGE_TASK_OPTIONS)
def baseline_batch(workspace: Workspace, method: str, key: str, image_ids: list[str]) -> BatchReport:
    """pseudo/nearest-scribbles (nearest scribble pixel's class) or pseudo/box-rectangles."""
    stage = pseudo_stage(method)

    def step(image_id: str) -> None:
        if method == "nearest-scribbles":
            if not workspace.has_array("scribbles", image_id):
                raise BadInputError(image_id, "no scribbles for this image")
            mask = nearest_scribble_fill(workspace.read_array("scribbles", image_id))
        elif method == "box-rectangles":
            mask = box_rectangles(workspace.read_array("boxes", image_id), workspace.array_shape("images", image_id)[:2])
        else:
            raise ValueError(f"unknown baseline {method!r}")
        workspace.write_array(stage, image_id, mask)

    return run_batch_in_task(workspace, stage, key, image_ids, step)
