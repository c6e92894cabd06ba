"""Flow: the GraphNet path, superpixels to evaluated pseudo masks, as one Prefect flow.

    superpixels -> features -> graphs -> seeds/<supervision> -> nodes/<method>
        -> pseudo/<method> (-> pseudo/<method>-crf) -> pseudo/<baseline> -> evaluate

Each stage records its config and a key chained with the keys of the stages it reads
(prepare_stage), so repeating the flow skips finished images and changing a stage's
config recomputes that stage and every stage after it. A stage runs only on images its
input stages finished; the others wait (their failures are recorded upstream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from prefect import flow

from flows.common import (
    DEFAULT_BATCH_SIZE,
    StageSummary,
    check_choice,
    console,
    eligible_ids,
    prepare_stage,
    run_stage,
)
from flows.evaluate import evaluate_flow
from tasks import graphnet as t
from tasks.superpixels import STAGE as SUPERPIXELS
from tasks.superpixels import superpixels_batch
from wsss_core.config import config_to_dict
from wsss_core.graphnet.config import (
    PROPAGATIONS,
    SUPERVISIONS,
    GraphNetConfig,
    baseline_name,
    method_name,
    resolve_feature_source,
)
from wsss_core.store import CAM_CHECKPOINT, INGEST_STAGE, Workspace

STEPS = ("superpixels", "features", "graphs", "seeds", "propagation", "masks", "baselines", "evaluate")


@dataclass
class GraphNetRun:
    """What one run did: a summary per stage run, the pseudo-mask stages, the evaluation (if any)."""

    summaries: list[StageSummary] = field(default_factory=list)
    mask_stages: list[str] = field(default_factory=list)
    evaluation: dict[str, dict] | None = None

    @property
    def ok(self) -> bool:
        return all(summary.ok for summary in self.summaries)


@flow(name="graphnet")
def graphnet_flow(
    workspace: str,
    supervision: str = "scribbles",
    backbone: str = "vgg16",
    weights: str | None = "DEFAULT",
    propagation: str = "gcn",
    crf: bool = False,
    config: GraphNetConfig = GraphNetConfig(),
    device: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    until: str | None = None,
    evaluate: bool = True,
    log_to_mlflow: bool = True,
    run_name: str | None = None,
) -> GraphNetRun:
    """Pseudo masks from scribbles or boxes (Pu et al. 2018) for every ingested image.

    backbone / weights: the CNN of the `features` stage (weights: a torchvision weights
    name, a checkpoint path, or "none"; when pretrained weights cannot be loaded the
    pipeline's CAM classifier <workspace>/models/cam/model.pt is used, else random init,
    with a warning). Not run when config.graphs.nodes.cnn is off. device: where the CNN
    and the GCN run (default: CUDA when available). until: stop after that step.
    """
    check_choice(supervision, SUPERVISIONS, "supervision")
    check_choice(propagation, PROPAGATIONS, "propagation")
    check_choice(until, STEPS, "step")
    ws = Workspace(workspace).require()
    run = GraphNetRun()
    options = dict(batch_size=batch_size, progress=progress)

    def reached(step: str) -> bool:
        """True when the flow should stop after `step`."""
        return until == step

    run.summaries.append(
        run_stage(ws, superpixels_batch, SUPERPIXELS, config.superpixels, [INGEST_STAGE], config=config.superpixels, **options)
    )
    if reached("superpixels"):
        return run

    graph_inputs = [INGEST_STAGE, SUPERPIXELS]
    if config.graphs.needs_cnn:
        source = resolve_feature_source(backbone, weights, ws.path / CAM_CHECKPOINT)
        if source.fallback:
            console.print(f"[bold red]WARNING:[/bold red] {source.note}")
        else:
            console.print(f"features: {source.backbone} with {source.note}")
        run.summaries.append(
            run_stage(ws, t.features_batch, t.FEATURES, source, [INGEST_STAGE], source=source, device=device, **options)
        )
        graph_inputs.append(t.FEATURES)
    else:
        console.print("features: not computed (this config uses no CNN features)")
    if reached("features"):
        return run

    run.summaries.append(run_stage(ws, t.graphs_batch, t.GRAPHS, config.graphs, graph_inputs, config=config.graphs, **options))
    if reached("graphs"):
        return run

    seeds = t.seeds_stage(supervision)
    seed_key = config.box_seeds if supervision == "boxes" else config.scribble_seeds
    run.summaries.append(
        run_stage(
            ws, t.seeds_batch, seeds, seed_key, [INGEST_STAGE, SUPERPIXELS],
            supervision=supervision, config=config.box_seeds, scribble_config=config.scribble_seeds, **options,
        )
    )
    if reached("seeds"):
        return run

    method = method_name(supervision, propagation)
    nodes = t.nodes_stage(method)
    if propagation == "gcn":
        init_path = None
        if config.gcn.pretrain_epochs > 0:
            init_path = pretrain(ws, method, supervision, config, device, seeds)
        run.summaries.append(
            run_stage(
                ws, t.gcn_batch, nodes, {"gcn": config_to_dict(config.gcn), "init": Path(init_path).name if init_path else None},
                [t.GRAPHS, seeds],
                method=method, supervision=supervision, config=config.gcn, device=device, init_path=init_path,
                **options,
            )
        )
    else:
        run.summaries.append(
            run_stage(
                ws, t.label_propagation_batch, nodes, config.label_propagation, [t.GRAPHS, seeds],
                method=method, supervision=supervision, config=config.label_propagation, **options,
            )
        )
    if reached("propagation"):
        return run

    masks = [(method, None, [nodes, SUPERPIXELS])]
    if crf:
        masks.append((f"{method}-crf", config.crf, [nodes, SUPERPIXELS, INGEST_STAGE]))
    for name, crf_config, upstream in masks:
        key_config = {"source": nodes, "crf": config_to_dict(crf_config) if crf_config else None}
        run.summaries.append(
            run_stage(
                ws, t.masks_batch, t.pseudo_stage(name), key_config, upstream,
                method=name, source=method, crf=crf_config, **options,
            )
        )
        run.mask_stages.append(t.pseudo_stage(name))
    if reached("masks"):
        return run

    baseline = baseline_name(supervision)
    run.summaries.append(
        run_stage(ws, t.baseline_batch, t.pseudo_stage(baseline), {"baseline": baseline}, [INGEST_STAGE], method=baseline, **options)
    )
    run.mask_stages.append(t.pseudo_stage(baseline))
    if reached("baselines") or not evaluate:
        return run

    stages = evaluation_stages(ws, supervision)
    if not any(ws.has_array("gt", i) for i in ws.image_ids()):
        console.print("evaluate: no ground-truth masks in this workspace; nothing to score")
        return run
    run.evaluation = evaluate_flow(
        str(ws.path), stages, run_name=run_name or f"graphnet-{supervision}", log_to_mlflow=log_to_mlflow
    )
    return run


def pretrain(ws: Workspace, method: str, supervision: str, config: GraphNetConfig, device: str | None, seeds: str) -> str:
    """Fit the shared GCN on every image with a graph and seeds; the file name carries its key."""
    stage = f"gcn-weights/{method}"
    key = prepare_stage(ws, stage, config.gcn, [t.GRAPHS, seeds])
    ids = eligible_ids(ws, [t.GRAPHS, seeds])
    console.print(f"gcn: fitting one shared GCN on the seeds of {len(ids)} images ({config.gcn.pretrain_epochs} epochs)")
    return t.gcn_pretrain(ws, method, supervision, config.gcn, key, ids, device=device)


def evaluation_stages(ws: Workspace, supervision: str) -> list[str]:
    """Every pseudo-mask stage of this supervision that holds finished, not stale masks."""
    baseline = t.pseudo_stage(baseline_name(supervision))
    stages = []
    for stage in ws.stages():
        if not stage.startswith("pseudo/"):
            continue
        method = stage.removeprefix("pseudo/").removesuffix("-crf")
        if stage != baseline and not method.endswith(f"-{supervision}"):
            continue
        if not stale_chain(ws, stage) and ws.done_ids(stage):
            stages.append(stage)
    return sorted(stages, key=lambda s: (s != baseline, s))


def stale_chain(ws: Workspace, stage: str) -> bool:
    """True when the stage, or any stage it reads from directly or indirectly, is stale."""
    seen: set[str] = set()
    pending = [stage]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if ws.is_stale(current):
            return True
        pending.extend((ws.stage_meta(current) or {}).get("upstream", {}))
    return False
