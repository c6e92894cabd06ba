"""Batched tasks of the GraphNet path: features, graphs, seeds, propagation, masks, baselines.

Every task is called as task(workspace, stage, key, image_ids, **params) by the pipeline
runner (flows/pipeline.py); params name the stages a task reads, so the table in
flows/graphnet.py is the only place that wires stages together. What they write:

    features/<id>                       float16 (D, ceil(H/8), ceil(W/8)) CNN feature map
    graphs/<id>/{node_features,edges,weights}
    seeds/<supervision>/<id>/{labels,candidates}
    gcn-weights/<method>                models/gcn/<method>-<key>.npz (dataset-level: one shared GCN)
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
from wsss_core.confidence import mask_attributes, node_confidence
from wsss_core.crf import CRFConfig
from wsss_core.config import config_to_dict, ids_digest
from wsss_core.errors import BadInputError
from wsss_core.graphnet.config import (
    GRAPH_ARRAYS,
    SEED_ARRAYS,
    GraphStageConfig,
    NodeFeatureConfig,
    graph_from_arrays,
    graph_to_arrays,
    seeds_from_arrays,
    seeds_to_arrays,
)
from wsss_core.graphnet.features import extract_feature_maps, node_features
from wsss_core.graphnet.gcn import GCNConfig, GCNWeights, GraphInput, pretrain_gcn, propagate_gcn
from wsss_core.graphnet.graph import build_graph
from wsss_core.graphnet.label_propagation import LabelPropagationConfig, propagate_labels
from wsss_core.graphnet.masks import crf_node_mask, node_mask
from wsss_core.graphnet.mixed import MixedSeedConfig, agreed_seeds, mixed_seeds, seed_source, strongest_mask
from wsss_core.graphnet.seeds import BoxSeedConfig, ScribbleSeedConfig, TagSeedConfig
from wsss_core.registries import SUPERVISIONS
from wsss_core.registries import resolve_target
from wsss_core.runner import BatchReport, DatasetReport, record_image_failure
from wsss_core.store import Workspace
from wsss_core.tracking import Tracking, open_run
from wsss_core.weights import WeightsChoice


@lru_cache(maxsize=2)
def cached_backbone(backbone: str, weights: str, device: str) -> Backbone:
    """One backbone per (name, weights, device) and process: built once, reused by every batch."""
    return build_backbone(backbone, weights).to(device).eval()


def read_named(workspace: Workspace, stage: str, image_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: workspace.read_array(stage, image_id, name) for name in names}


# ----------------------------------------------------------------------------- features


@task(name="features-batch", **STAGE_TASK_OPTIONS)
def features_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    source: WeightsChoice,
    device: str | None = None,
    images_per_pass: int = 8,
) -> BatchReport:
    """CNN feature maps of the batch's images, several images per forward pass."""
    target = resolve_device(device)
    backbone = cached_backbone(source.backbone, source.weights, str(target))

    def compute(images: list[np.ndarray]) -> list[np.ndarray]:
        return extract_feature_maps(backbone, images, target, batch_size=images_per_pass)

    def write(image_id: str, feature_map: np.ndarray) -> None:
        workspace.write_array(stage, image_id, feature_map.astype(np.float16))

    load = lambda image_id: workspace.read_array("images", image_id)  # noqa: E731
    return run_block_in_task(workspace, stage, key, image_ids, load, compute, write)


# ----------------------------------------------------------------------------- graphs


@task(name="graphs-batch", **STAGE_TASK_OPTIONS)
def graphs_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: GraphStageConfig,
    superpixels: str = "superpixels",
    features: str = "features",
) -> BatchReport:
    """Node features (pooled CNN features and/or colour, position) and the superpixel graph."""

    def step(image_id: str) -> None:
        labels = workspace.read_array(superpixels, image_id)
        feature_map = workspace.read_array(features, image_id) if config.needs_cnn else None
        image = workspace.read_array("images", image_id)
        n_nodes = int(labels.max()) + 1

        def describe(nodes: NodeFeatureConfig) -> np.ndarray:
            return node_features(feature_map if nodes.cnn else None, image, labels, n_nodes, nodes.feature_config())

        node_vectors = describe(config.nodes)
        graph = build_graph(labels, node_vectors if config.edges is None else describe(config.edges), config.graph)
        for name, array in graph_to_arrays(node_vectors, graph).items():
            workspace.write_array(stage, image_id, array, name=name)

    return run_batch_in_task(workspace, stage, key, image_ids, step)


# ----------------------------------------------------------------------------- seeds


@task(name="seeds-batch", **STAGE_TASK_OPTIONS)
def seeds_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    supervision: str,
    config: ScribbleSeedConfig | BoxSeedConfig | TagSeedConfig,
    superpixels: str = "superpixels",
) -> BatchReport:
    """Seed labels and candidate classes of every node, from the image's weak labels (and,
    for tags, the affinity labels of the AffinityNet path: the entry's seeds_from)."""
    entry = SUPERVISIONS.get(supervision)
    make_seeds = resolve_target(entry.seeds)
    classes = len(workspace.classes)

    def step(image_id: str) -> None:
        if not workspace.has_array(entry.array, image_id):
            raise BadInputError(image_id, f"no {entry.array} for this image")
        labels = workspace.read_array(superpixels, image_id)
        extra = (workspace.read_array(entry.seeds_from, image_id),) if entry.seeds_from else ()
        corrections = {}
        if getattr(config, "scribbles", False) and workspace.has_array("scribbles", image_id):  # TagSeedConfig.scribbles
            corrections["scribble"] = workspace.read_array("scribbles", image_id)
        seeds = make_seeds(labels, workspace.read_array(entry.array, image_id), classes, config, *extra, **corrections)
        if not seeds.labelled.any():
            raise BadInputError(image_id, f"no node is seeded by its {supervision}")
        for name, array in seeds_to_arrays(seeds).items():
            workspace.write_array(stage, image_id, array, name=name)

    return run_batch_in_task(workspace, stage, key, image_ids, step)


@task(name="mixed-seeds-batch", **STAGE_TASK_OPTIONS)
def mixed_seeds_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: MixedSeedConfig,
    superpixels: str = "superpixels",
    affinity_labels: str = "affinity-labels",
) -> BatchReport:
    """seeds/mixed: each image's seeds from the weak labels it carries (wsss_core.graphnet.mixed)."""
    classes = len(workspace.classes)

    def step(image_id: str) -> None:
        labels = workspace.read_array(superpixels, image_id)
        scribble = workspace.read_array("scribbles", image_id) if workspace.carries("scribbles", image_id) else None
        boxes = workspace.read_array("boxes", image_id) if workspace.carries("boxes", image_id) else None
        confident = None
        if scribble is None and boxes is None:
            confident = workspace.read_array(affinity_labels, image_id)
        tags = workspace.read_array("tags", image_id)
        seeds = mixed_seeds(labels, classes, tags, config, scribble, boxes, confident)
        if not seeds.labelled.any():
            raise BadInputError(image_id, f"no node is seeded by its {seed_source(scribble is not None, boxes is not None)}")
        for name, array in seeds_to_arrays(seeds).items():
            workspace.write_array(stage, image_id, array, name=name)

    return run_batch_in_task(workspace, stage, key, image_ids, step)


@task(name="agreed-seeds-batch", **STAGE_TASK_OPTIONS)
def agreed_seeds_batch(workspace: Workspace, stage: str, key: str, image_ids: list[str], seeds: str, nodes: str) -> BatchReport:
    """A mixed dataset's seeds for the shared GCN: a drawn image's own, a tag-only image's CAM seeds
    where the GCN fitted on the drawn images (nodes) agrees (wsss_core.graphnet.mixed.agreed_seeds)."""

    def step(image_id: str) -> None:
        own = seeds_from_arrays(read_named(workspace, seeds, image_id, SEED_ARRAYS))
        if not (workspace.carries("scribbles", image_id) or workspace.carries("boxes", image_id)):
            own = agreed_seeds(own, workspace.read_array(nodes, image_id))
        for name, array in seeds_to_arrays(own).items():
            workspace.write_array(stage, image_id, array, name=name)

    return run_batch_in_task(workspace, stage, key, image_ids, step)


# ----------------------------------------------------------------------------- propagation


def load_graph_input(workspace: Workspace, graphs: str, seeds: str, image_id: str) -> GraphInput:
    features, graph = graph_from_arrays(read_named(workspace, graphs, image_id, GRAPH_ARRAYS))
    node_seeds = seeds_from_arrays(read_named(workspace, seeds, image_id, SEED_ARRAYS))
    if node_seeds.n_nodes != graph.n_nodes:
        raise BadInputError(image_id, f"{node_seeds.n_nodes} seeded nodes but the graph has {graph.n_nodes}")
    return GraphInput(features, graph, node_seeds)


def gcn_weights_path(workspace: Workspace, stage: str, key: str) -> Path:
    """models/gcn/<method>-<key>.npz for the stage gcn-weights/<method>."""
    return workspace.path / "models" / "gcn" / f"{stage.rsplit('/', 1)[-1]}-{key}.npz"


def load_gcn_weights(path: str | Path) -> GCNWeights:
    with np.load(path) as arrays:
        return GCNWeights.from_arrays(dict(arrays))


@task(name="gcn-batch", **STAGE_TASK_OPTIONS)
def gcn_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: GCNConfig,
    graphs: str,
    seeds: str,
    init: str | None = None,
    device: str | None = None,
) -> BatchReport:
    """One GCN per image, the whole batch trained at once as a block-diagonal graph.

    init: the gcn-weights stage whose shared GCN every image's GCN starts from (an image
    that joined after that fit starts from the one fitted with it; see gcn_fit).
    """
    target = resolve_device(device)
    init_key = workspace.stage_key(init) if init is not None else None
    models: dict[str, GCNWeights] = {}

    def start_weights(image_id: str) -> GCNWeights | None:
        if init is None:
            return None
        main = gcn_weights_path(workspace, init, init_key or "")
        path = main.with_name(workspace.served_by(init, image_id, init_key or "") or main.name)
        if path.name not in models:
            models[path.name] = load_gcn_weights(path)
        return models[path.name]

    def load(image_id: str) -> tuple[GraphInput, GCNWeights | None]:
        return load_graph_input(workspace, graphs, seeds, image_id), start_weights(image_id)

    def compute(batch: list[tuple[GraphInput, GCNWeights | None]]) -> list[np.ndarray]:
        # one block per starting model; an image's result does not depend on its block
        results: list[np.ndarray | None] = [None] * len(batch)
        for weights in {id(w): w for _, w in batch}.values():
            members = [n for n, (_, w) in enumerate(batch) if w is weights]
            outputs = propagate_gcn([batch[n][0] for n in members], config, target, init=weights)
            for n, output in zip(members, outputs, strict=True):
                results[n] = output
        return results  # type: ignore[return-value]

    def write(image_id: str, probabilities: np.ndarray) -> None:
        workspace.write_array(stage, image_id, probabilities.astype(np.float32))

    with single_torch_thread(target):
        return run_block_in_task(workspace, stage, key, image_ids, load, compute, write)


@task(name="gcn-fit", tags=["gpu"], persist_result=False)
def gcn_fit(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: GCNConfig,
    graphs: str,
    seeds: str,
    device: str | None = None,
    tracking: Tracking | None = None,
    drawn_only: bool = False,
) -> DatasetReport:
    """One shared GCN fitted on the seeds of all the given images (dataset-level).

    drawn_only: fitted on the images that carry scribbles or boxes only (every image when none
    does), and serving every given image (a mixed dataset's first step, see wsss_core.graphnet.mixed).

    Reuses the file when one of the same key exists; written atomically, so a crash
    leaves either no file or a whole one. Images that joined after that fit (not in the
    ids the file records) get a GCN fitted on every given image, used for them only:
    exactly the model a clean run of these images would fit (seconds of work), while the
    images already done keep theirs (wsss_core.refit).
    """
    path = gcn_weights_path(workspace, stage, key)
    report = DatasetReport(stage, str(path))
    items = []
    for image_id in image_ids:
        try:
            items.append(load_graph_input(workspace, graphs, seeds, image_id))
            report.images.append(image_id)
        except Exception as error:  # noqa: BLE001 - a bad image is left out and recorded
            report.failed[image_id] = record_image_failure(workspace, stage, key, image_id, error)
    if not items:
        raise BadInputError(workspace.path, "no image with a graph and seeds to fit the GCN on")
    if drawn_only:
        drawn = [item for image_id, item in zip(report.images, items, strict=True)
                 if workspace.carries("scribbles", image_id) or workspace.carries("boxes", image_id)]
        items = drawn or items
    if path.is_file():
        fitted = fitted_images(path)
        # late: not fitted on, or fitted on but its input changed since (ingest made it not done
        # while others stay done; with none done the fit's own run stopped before marking them)
        done = workspace.done_ids(stage, key)
        late = [i for i in report.images if fitted is not None and (i not in fitted or (done and i not in done))]
        if late:
            # named by the images and when their graphs and seeds were last written: an edited
            # scribble makes a new late fit, never the one fitted on the old seeds
            stamps = workspace.done_stamps(graphs), workspace.done_stamps(seeds)
            inputs = [f"{i}@{stamps[0].get(i)}@{stamps[1].get(i)}" for i in report.images]
            late_path = path.with_name(f"{path.stem}-with-{ids_digest(inputs)}.npz")
            if not late_path.is_file():
                fit_and_save(items, report.images, config, device, late_path)
            report.served_by = {image_id: late_path.name for image_id in late}
            report.late_note = f"the shared GCN fitted again with them, used for them only ({late_path.name})"
        return report
    get_run_logger().info("%s: fitting one shared GCN on the seeds of %d images", stage, len(items))
    if tracking is None:
        fit_and_save(items, report.images, config, device, path)
    else:  # a nested MLflow run, like every training
        params = {"network": "gcn", **config_to_dict(config), "n_images": len(items)}
        with open_run(tracking, stage, params, {"kind": "training", "stage": stage, "stage_key": key}) as run:
            report.mlflow_run_id = run.run_id
            fit_and_save(items, report.images, config, device, path)
            run.log_artifact(path, "model")
    report.trained = True
    return report


def fit_and_save(items: list[GraphInput], image_ids: list[str], config: GCNConfig, device: str | None, path: Path) -> None:
    """Fit the shared GCN and write it, with the ids it learned from, atomically."""
    target = resolve_device(device)
    with single_torch_thread(target):
        fitted = pretrain_gcn(items, config, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **fitted.to_arrays(), image_ids=np.array(image_ids, dtype=str))
    os.replace(partial, path)


def fitted_images(path: Path) -> set[str] | None:
    """The ids a shared GCN file was fitted on (None: a file from before they were recorded)."""
    with np.load(path) as arrays:
        return set(arrays["image_ids"].tolist()) if "image_ids" in arrays else None


@task(name="label-propagation-batch", **STAGE_TASK_OPTIONS)
def label_propagation_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    config: LabelPropagationConfig,
    graphs: str,
    seeds: str,
) -> BatchReport:
    """Zhou et al.'s label propagation on the same graph and seeds as the GCN."""

    def step(image_id: str) -> None:
        item = load_graph_input(workspace, graphs, seeds, image_id)
        workspace.write_array(stage, image_id, propagate_labels(item.graph, item.seeds, config))

    return run_batch_in_task(workspace, stage, key, image_ids, step)


# ----------------------------------------------------------------------------- masks


@task(name="masks-batch", **STAGE_TASK_OPTIONS)
def masks_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    nodes: str,
    crf: CRFConfig | None = None,
    superpixels: str = "superpixels",
) -> BatchReport:
    """pseudo/<method>: the node probabilities of `nodes` painted to pixels (optionally dense CRF)."""

    def step(image_id: str) -> None:
        labels = workspace.read_array(superpixels, image_id)
        probabilities = workspace.read_array(nodes, image_id)
        if crf is None:
            mask = node_mask(labels, probabilities)
        else:
            mask = crf_node_mask(workspace.read_array("images", image_id), labels, probabilities, crf)
        workspace.write_array(stage, image_id, mask, attributes=mask_attributes(node_confidence(labels, probabilities)))

    return run_batch_in_task(workspace, stage, key, image_ids, step)


@task(name="strongest-masks-batch", **STAGE_TASK_OPTIONS)
def strongest_masks_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: list[str],
    masks: str,
    tiers: tuple[tuple[str, str], ...] = (),
    crf: CRFConfig | None = None,
    superpixels: str = "superpixels",
) -> BatchReport:
    """pseudo/mixed: each image's mask from its strongest labels (wsss_core.graphnet.mixed.strongest_mask):
    a person-drawn full mask (the ingested "manual" array); else the node probabilities of the
    first tier (label kind, nodes stage) whose label the image carries, painted (with crf, as
    masks_batch does); else `masks` (the shared GCN's)."""

    def paint(nodes: str, image_id: str) -> tuple[np.ndarray, dict]:
        labels, probabilities = workspace.read_array(superpixels, image_id), workspace.read_array(nodes, image_id)
        mask = (node_mask(labels, probabilities) if crf is None
                else crf_node_mask(workspace.read_array("images", image_id), labels, probabilities, crf))
        return mask, mask_attributes(node_confidence(labels, probabilities))

    def step(image_id: str) -> None:
        manual = workspace.read_array("manual", image_id) if workspace.carries("manual", image_id) else None
        tier = next((nodes for kind, nodes in tiers if workspace.carries(kind, image_id)), None) if manual is None else None
        painted, attributes = paint(tier, image_id) if tier else (None, {})
        mask, source = strongest_mask(manual, [painted], workspace.read_array(masks, image_id))
        if source == "shared":
            attributes = workspace.array_attributes(masks, image_id)
        workspace.write_array(stage, image_id, mask, attributes={**attributes, "source": tier or source})

    return run_batch_in_task(workspace, stage, key, image_ids, step)


@task(name="baseline-batch", **STAGE_TASK_OPTIONS)
def baseline_batch(workspace: Workspace, stage: str, key: str, image_ids: list[str], supervision: str) -> BatchReport:
    """The supervision's non-learned baseline (nearest-scribble fill, box rectangles)."""
    entry = SUPERVISIONS.get(supervision)
    make_mask = resolve_target(entry.baseline_mask)

    def step(image_id: str) -> None:
        if not workspace.has_array(entry.array, image_id):
            raise BadInputError(image_id, f"no {entry.array} for this image")
        shape = workspace.array_shape("images", image_id)[:2]
        workspace.write_array(stage, image_id, make_mask(workspace.read_array(entry.array, image_id), shape))

    return run_batch_in_task(workspace, stage, key, image_ids, step)
