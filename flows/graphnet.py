"""Flow: the GraphNet path (Pu et al. 2018), weak labels to evaluated pseudo masks, as a table.

    superpixels -> [features] -> graphs -> seeds/<supervision> -> [gcn-weights/<method>]
        -> nodes/<method> -> pseudo/<method> [-> pseudo/<method>-crf] -> pseudo/<baseline> -> evaluate

Tags: the AffinityNet table's CAM rows (train-cam -> cams -> pseudo/cam -> affinity-labels,
the same rows and keys, flows.affinitynet.cam_rows) come first; the confident labels seed
the nodes and pseudo/cam is the baseline.
"""

from __future__ import annotations

from dataclasses import replace

from prefect import flow

from flows.affinitynet import cam_rows, default_train_threads, has_gpu
from flows.common import Execution, announce, outcome
from flows.evaluate import evaluate_path
from flows.path import PathPlan, run_path
from flows.pipeline import Pipeline, PipelineRun, Stage
from tasks import graphnet as t
from tasks.superpixels import superpixels_batch
from wsss_core.graphnet.config import GraphNetConfig, baseline_settings, resolve_config, run_settings
from wsss_core.psa import config as psa
from wsss_core.registries import AUTO, PROPAGATIONS, SUPERVISIONS, mask_method_name
from wsss_core.requests import CamSettings, GraphNetRequest
from wsss_core.store import CAM_CHECKPOINT, IMAGES, INGEST_ARRAYS, Workspace
from wsss_core.tracking import Tracking
from wsss_core.weights import WeightsChoice, offline_said, resolve_pretrained

SUPERPIXELS = "superpixels"
MIXED = "mixed"  # the supervision of a mixed dataset (wsss_core.graphnet.mixed)


def propagation_rows(
    config: GraphNetConfig, propagation: str, method: str, seeds: str, device: str | None, tracking: Tracking | None = None
) -> list[Stage]:
    """The rows that label every node: the GCN (with its dataset-level fit) or label propagation."""
    nodes = f"nodes/{method}"
    inputs = {"graphs": "graphs", "seeds": seeds}
    if PROPAGATIONS.check(propagation) == "label-propagation":
        return [Stage(nodes, t.label_propagation_batch, ("graphs", seeds), {**inputs, "config": config.label_propagation}, step="propagation")]
    rows, init = [], None
    if config.gcn.pretrain_epochs > 0:
        init = f"gcn-weights/{method}"
        rows.append(
            Stage(init, t.gcn_fit, ("graphs", seeds), {**inputs, "config": config.gcn},
                  {"device": device, "tracking": tracking}, step="propagation", dataset_level=True)
        )
    reads = ("graphs", seeds) + ((init,) if init else ())
    rows.append(Stage(nodes, t.gcn_batch, reads, {**inputs, "config": config.gcn, "init": init}, {"device": device}, step="propagation"))
    return rows


def graphnet_pipeline(
    config: GraphNetConfig,
    supervision: str,
    propagation: str,
    crf: bool,
    features: WeightsChoice | None,
    device: str | None = None,
    tracking: Tracking | None = None,
    upstream: tuple[Stage, ...] = (),
) -> Pipeline:
    """The GraphNet table for one request. features: the CNN weights (None: no CNN stage);
    tracking: the flow run's MLflow run, for the trainings' nested runs (None: off);
    upstream: another path's rows that make the supervision's seeds_from (tags: cam_rows)."""
    entry = SUPERVISIONS.get(supervision)
    method = mask_method_name(supervision, propagation)
    seeds = f"seeds/{supervision}"
    nodes = f"nodes/{method}"
    # Reads name the ingested arrays a row uses ("images", the supervision's "scribbles"...): a
    # changed array reaches just the rows that read it (wsss_core.lineage); keys chain ingest's key.
    seed_reads = (entry.array, SUPERPIXELS) + ((entry.seeds_from,) if entry.seeds_from else ())
    if getattr(config.seeds_config(supervision), "scribbles", False):  # tags corrected by scribbles
        seed_reads += ("scribbles",)
    rows = [*upstream, Stage(SUPERPIXELS, superpixels_batch, (IMAGES,), {"config": config.superpixels})]
    graph_reads: tuple[str, ...] = (IMAGES, SUPERPIXELS)
    if features is not None:
        rows.append(Stage("features", t.features_batch, (IMAGES,), {"source": features}, {"device": device}))
        graph_reads += ("features",)
    rows += [
        Stage("graphs", t.graphs_batch, graph_reads, {"config": config.graphs}),
        seeds_row(config, supervision, seeds, seed_reads),
        *(agreement_rows(config, seeds, device, tracking) if teaches_from_drawn(config, supervision, propagation) else []),
        *propagation_rows(config, propagation, method, AGREED if teaches_from_drawn(config, supervision, propagation) else seeds,
                          device, tracking),
        Stage(f"pseudo/{method}", t.masks_batch, (nodes, SUPERPIXELS), {"nodes": nodes}, step="masks", masks=True),
    ]
    if crf:
        rows.append(
            Stage(f"pseudo/{method}-crf", t.masks_batch, (nodes, SUPERPIXELS, IMAGES),
                  {"nodes": nodes, "crf": config.crf}, step="masks", masks=True)
        )
    final = f"pseudo/{method}" + ("-crf" if crf else "")
    if supervision == MIXED:  # each image's mask from its strongest labels; a full mask where one was drawn
        manual = ("manual",) if "manual" in INGEST_ARRAYS else ()  # the ingested person-drawn masks, once ingest has them
        tiers = TIERS if teaches_from_drawn(config, supervision, propagation) else ()
        tier_nodes = tuple(nodes for _, nodes in tiers)
        reads = (final, *tier_nodes, *((SUPERPIXELS,) if tiers else ()), *((IMAGES,) if tiers and crf else ()), *manual)
        rows.append(Stage(f"pseudo/{MIXED}", t.strongest_masks_batch, reads,
                          {"masks": final, "tiers": tiers, "crf": config.crf if crf else None},
                          step="masks", masks=True, optional_reads=manual + tier_nodes[:1]))
        final = f"pseudo/{MIXED}"
    if entry.baseline_mask is not None:  # else the upstream rows make it (tags: pseudo/cam)
        rows.append(
            Stage(f"pseudo/{entry.baseline}", t.baseline_batch, (entry.array, IMAGES), {"supervision": supervision},
                  step="baselines", masks=True)
        )
    return Pipeline(f"graphnet-{supervision}", tuple(rows), final_masks=final)


AGREED, DRAWN, SCRIBBLED = "seeds/mixed-agreed", "mixed-drawn", "mixed-scribbled"
# pseudo/mixed of an image that carries the label: the GCN fitted on labels at least that strong
TIERS = (("scribbles", f"nodes/{SCRIBBLED}"), ("boxes", f"nodes/{DRAWN}"))


def teaches_from_drawn(config: GraphNetConfig, supervision: str, propagation: str) -> bool:
    """A mixed dataset under a shared GCN (the offline preset): its tag-only images are seeded where
    the CAM and a GCN fitted on the drawn images agree (wsss_core.graphnet.mixed)."""
    return supervision == MIXED and PROPAGATIONS.check(propagation) == "gcn" and config.gcn.pretrain_epochs > 0


def agreement_rows(config: GraphNetConfig, seeds: str, device: str | None, tracking: Tracking | None) -> list[Stage]:
    """The GCN fitted on the scribbled images' seeds (reading "scribbles", these rows run over the
    scribbled images only) and its labels of them; the GCN fitted on the drawn images' seeds, its
    labels of every image, and the CAM seeds it agrees with."""
    fit, nodes = f"gcn-weights/{DRAWN}", f"nodes/{DRAWN}"
    scribbled_fit, scribbled_nodes = f"gcn-weights/{SCRIBBLED}", f"nodes/{SCRIBBLED}"
    inputs = {"graphs": "graphs", "seeds": seeds}
    return [
        Stage(scribbled_fit, t.gcn_fit, ("graphs", seeds, "scribbles"), {**inputs, "config": config.gcn},
              {"device": device, "tracking": tracking}, step="propagation", dataset_level=True),
        Stage(scribbled_nodes, t.gcn_batch, ("graphs", seeds, scribbled_fit, "scribbles"),
              {**inputs, "config": config.gcn, "init": scribbled_fit}, {"device": device}, step="propagation"),
        Stage(fit, t.gcn_fit, ("graphs", seeds), {**inputs, "config": config.gcn, "drawn_only": True},
              {"device": device, "tracking": tracking}, step="propagation", dataset_level=True),
        Stage(nodes, t.gcn_batch, ("graphs", seeds, fit), {**inputs, "config": config.gcn, "init": fit},
              {"device": device}, step="propagation"),
        Stage(AGREED, t.agreed_seeds_batch, (seeds, nodes), {"seeds": seeds, "nodes": nodes}, step="propagation"),
    ]


def seeds_row(config: GraphNetConfig, supervision: str, seeds: str, reads: tuple[str, ...]) -> Stage:
    """The seeds row: from the supervision's array, or (mixed) from whatever labels each image
    carries, every image of the run (the labels it lacks are optional reads)."""
    if supervision != MIXED:
        return Stage(seeds, t.seeds_batch, reads, {"supervision": supervision, "config": config.seeds_config(supervision)}, step="seeds")
    optional = ("scribbles", "boxes", "affinity-labels")  # a scribbled image needs no CAM
    return Stage(seeds, t.mixed_seeds_batch, (*reads, "scribbles", "boxes"), {"config": config.mixed_seeds},
                 step="seeds", optional_reads=optional)


def feature_weights(ws: Workspace, config: GraphNetConfig) -> WeightsChoice | None:
    """The CNN weights of the features stage, load-tested (fallback: the pipeline's CAM classifier)."""
    if not config.graphs.needs_cnn:
        announce("features: not computed (this config uses no CNN features)")
        return None
    choice = resolve_pretrained("features", config.backbone, config.weights, ws.path / CAM_CHECKPOINT)
    announce(choice.note if choice.fallback else f"features: {choice.backbone} with {choice.note}",
             warning=choice.fallback and not offline_said())
    return choice


def resolve_cam_config(supervision: str, n_images: int, device: str | None, cam: CamSettings) -> psa.ResolvedConfig | None:
    """The AffinityNet config of the CAM rows a supervision needs (tags), resolved as
    `wsss affinitynet` resolves it (same preset, backbone, weights and overrides), so both
    share stage keys; None for scribbles and boxes."""
    if not SUPERVISIONS.get(supervision).seeds_from:
        return None
    resolved = psa.resolve_config(cam.preset, n_images, has_gpu(device), cam.backbone, cam.weights, overrides=cam.overrides)
    announce(f"graphnet: CAM rows of the affinitynet path, preset {resolved.preset} ({resolved.why})")
    return resolved


def graphnet_plan(ws: Workspace, request: GraphNetRequest) -> PathPlan:
    """The request resolved (preset, features' weights, tags' CAM rows) and announced."""
    supervision, propagation, crf, device = request.supervision, request.propagation, request.crf, request.device
    SUPERVISIONS.check(supervision)
    PROPAGATIONS.check(propagation)
    cam = resolve_cam_config(supervision, len(ws.select_ids(request.splits)), device, request.cam)
    resolved = resolve_config(request.preset, request.backbone, request.weights, request.overrides)
    announce(f"graphnet: preset {resolved.preset} ({resolved.why})",
             warning=resolved.preset != "paper" and request.preset == AUTO and not offline_said())
    features = feature_weights(ws, resolved.config)
    settings = run_settings(resolved, supervision, propagation, crf, features.record() if features else None)
    baseline = f"pseudo/{SUPERVISIONS.get(supervision).baseline}"
    baseline_of = {**psa.run_settings(cam, crf=False), "method": "cam"} if cam else baseline_settings(supervision)

    def table(tracking: Tracking | None) -> Pipeline:
        upstream = tuple(cam_rows(cam.config, cam.weights, device, default_train_threads(), tracking)) if cam else ()
        return graphnet_pipeline(resolved.config, supervision, propagation, crf, features, device, tracking, upstream)

    def evaluate(run: PipelineRun, name: str) -> dict | None:
        return evaluate_path(ws, supervision, run.mask_stages, name, request.log_to_mlflow, request.split_list)

    notes = {"preset": resolved.preset, "preset_why": resolved.why}
    if features is not None:
        notes["weights"] = {"features": features.record()}
    return PathPlan(
        "graphnet", "flows.graphnet:graphnet_flow", replace(request, preset=resolved.preset), settings, resolved.config,
        ws.select_ids(request.splits), table, lambda stage: baseline_of if stage == baseline else settings, evaluate,
        inherit=("path", "method", "supervision", "preset"), notes=notes,
    )


@flow(name="graphnet")
def graphnet_flow(
    workspace: str,
    request: GraphNetRequest = GraphNetRequest(),
    execution: Execution = Execution(),
    only_ids: list[str] | None = None,
) -> PipelineRun:
    """Pseudo masks from scribbles, boxes or image tags for every image of the request's splits
    (wsss_core.requests.GraphNetRequest: every choice, with its default).

    tags: the AffinityNet path's CAM rows (train-cam, cams, pseudo/cam, affinity-labels;
    computed when missing, reused after `wsss affinitynet` with the same request.cam) seed the graph.
    When pretrained weights cannot be loaded the features stage uses the pipeline's CAM
    classifier, else random init, loudly. only_ids: re-run just these images (a retry: same
    request, their finished stages skipped). execution: the engine (threads, processes, dask),
    workers, batch size, progress. Ends Failed (with the count per stage) when images failed;
    the result is still returned.
    """
    ws = Workspace(workspace).require()
    run = run_path(ws, graphnet_plan(ws, request), request, execution, only_ids)
    return outcome(run, run.summaries, workspace)
