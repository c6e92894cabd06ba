"""Flow: mIoU of mask stages against GT per split, printed as a table, saved as a report and
logged to MLflow (one nested run per mask stage and split, under the flow run's run)."""

from __future__ import annotations

import hashlib
import json
import time

from prefect import flow

from flows.common import DEFAULT_BATCH_SIZE, announce
from flows.tracking import flow_run_tracking, mask_settings
from tasks.evaluate import Scores, evaluate_batch, log_evaluation_run
from wsss_core.errors import WorkspaceError
from wsss_core.last_word import LABEL_GROUP, evaluation_mious, worse_last_rounds
from wsss_core.manual import NO_MANUAL, manual_ids
from wsss_core.metrics import ConfusionMatrix, format_iou_table
from wsss_core.registries import mask_method_of_stage, mask_round_of_stage, mask_stage_order
from wsss_core.runner import split_batches
from wsss_core.store import INGEST_STAGE, Workspace, write_json_atomic
from wsss_core.tracking import experiment_name, tracking_uri

REPORT_DIR = "reports"
ALL_IMAGES = "all"  # the split column of a workspace whose images have no recorded split


def score_stages(
    workspace: str, stages: list[str], run_name: str, batch_size: int, log_to_mlflow: bool, splits: list[str] | None
) -> dict[str, dict]:
    ws = Workspace(workspace).require()
    missing = [s for s in stages if ws.stage_meta(s) is None]
    if missing:
        raise WorkspaceError(f"{ws.path}: cannot evaluate {', '.join(missing)}: not computed yet")
    ids = ws.select_ids(splits)
    members = {**split_members(ws, splits), **label_group_members(ws, ids)}
    manual = set(manual_ids(ws, ids))
    if manual:  # every mask set again without the images a person drew (wsss_core.manual)
        members[NO_MANUAL] = set(ids) - manual
        announce(f"evaluate: {len(manual)} images have a manual mask; column {NO_MANUAL} scores every mask set without them")
    memberships = {i: [s for s, found in members.items() if i in found] for i in ids}
    fingerprints = scores_fingerprints(ws, stages, ids, members)
    known = scored_before(ws)
    reused = {stage: known[fingerprints[stage]] for stage in stages if fingerprints[stage] in known}
    fresh = [stage for stage in stages if stage not in reused]
    futures = [
        evaluate_batch.submit(ws, fresh, batch, {i: memberships[i] for i in batch}) for batch in split_batches(ids, batch_size)
    ] if fresh else []
    totals: Scores = {}
    for future in futures:
        for where, matrix in future.result().items():
            totals[where] = totals[where].merge(matrix) if where in totals else matrix
    for stage, entry in reused.items():
        totals[(stage, None)] = ConfusionMatrix.from_dict(entry)
        for split, scores in (entry.get("splits") or {}).items():
            totals[(stage, split)] = ConfusionMatrix.from_dict(scores)
    if reused:
        announce(f"evaluate: {len(reused)} of {len(stages)} mask sets unchanged since they were scored "
                 "(same masks, images and splits): scores read back from reports/, not recomputed")
    table = table_rows(stages, list(members), totals, len(ws.classes))
    announce(format_iou_table(table, ws.classes, key_header=("mask set", "round", "split"), images=True))
    overall = {stage: totals.get((stage, None), ConfusionMatrix(len(ws.classes))) for stage in stages}
    if len({matrix.images for matrix in overall.values()}) > 1:
        counts = ", ".join(f"{stage} {matrix.images}" for stage, matrix in overall.items())
        why = "each path scores the images that carry its labels" if any(m.startswith(LABEL_GROUP) for m in members) else ""
        announce(f"the methods were scored on different images ({counts}): {why + '; ' if why else ''}"
                 "the others failed or are pending, see `wsss status`", warning=not why)
    store = tracking_store(ws) if log_to_mlflow else None
    # a stage read back was logged to MLflow when it was scored; log it only where it is not yet
    to_log = [stage for stage in stages if stage not in reused or reused[stage].get(LOGGED_TO) != store]
    results = {
        stage: {**matrix.to_dict(), "splits": {s: totals[(stage, s)].to_dict() for s in members if (stage, s) in totals},
                FINGERPRINT: fingerprints[stage],
                LOGGED_TO: store if stage in to_log else (reused[stage].get(LOGGED_TO) if stage in reused else None)}
        for stage, matrix in overall.items()
    }
    for worse in worse_last_rounds(evaluation_mious(results)):
        announce(worse.line(), warning=True)
    report = ws.path / REPORT_DIR / f"evaluation-{run_name}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report, {"time": time.time(), "splits": splits, "unit": "fraction", "results": results})
    evaluated = {"stages": ", ".join(stages), "splits": ", ".join(members) or ALL_IMAGES, "report": report.name}
    with flow_run_tracking(ws, log_to_mlflow and bool(to_log), "evaluate", evaluated) as tracking:
        if tracking is not None:
            for stage in to_log:
                for split, scores in (results[stage]["splits"] or {ALL_IMAGES: results[stage]}).items():
                    image_ids = sorted(members[split]) if split in members else ids
                    log_evaluation_run(ws, tracking, stage, split, scores, mask_settings(ws, stage), str(report), image_ids)
    return results


# What a stage's scores depend on, hashed into its entry in reports/evaluation-*.json: the
# version of the scoring, the classes, the stage's key, each scored image's mask marker and
# ingest marker (GT) stamps, and which of those images each split holds. Same fingerprint,
# same confusion matrices: the evaluation reads them back instead of recomputing them.
SCORING_VERSION = 1
FINGERPRINT = "fingerprint"
LOGGED_TO = "mlflow"  # the tracking store (URI and experiment) its runs were logged to; None: not logged


def scores_fingerprints(ws: Workspace, stages: list[str], ids: list[str], members: dict[str, set[str]]) -> dict[str, str]:
    ingest = ws.done_stamps(INGEST_STAGE)
    chosen = set(ids)
    splits = {split: sorted(found & chosen) for split, found in members.items()}
    fingerprints = {}
    for stage in stages:
        masks = ws.done_stamps(stage)
        payload = {
            "version": SCORING_VERSION, "classes": ws.classes, "stage": stage, "key": ws.stage_key(stage),
            "images": [[i, masks.get(i), ingest.get(i)] for i in ids], "splits": splits,
        }
        fingerprints[stage] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return fingerprints


def scored_before(ws: Workspace) -> dict[str, dict]:
    """{fingerprint: a stage's entry} of every evaluation report in the workspace that has one
    (reports made before fingerprints, or unreadable ones, give nothing to read back)."""
    known: dict[str, dict] = {}
    for path in sorted((ws.path / REPORT_DIR).glob("evaluation-*.json")):
        try:
            results = json.loads(path.read_text())["results"]
            entries = [entry for entry in results.values() if isinstance(entry, dict) and entry.get(FINGERPRINT)]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        for entry in entries:  # an entry whose runs were logged wins over an unlogged one
            if entry[FINGERPRINT] not in known or known[entry[FINGERPRINT]].get(LOGGED_TO) is None:
                known[entry[FINGERPRINT]] = entry
    return known


def tracking_store(ws: Workspace) -> str:
    """Where this evaluation's MLflow runs go: the tracking URI and the experiment."""
    return f"{tracking_uri(ws.path)}#{experiment_name()}"


def split_members(ws: Workspace, splits: list[str] | None) -> dict[str, set[str]]:
    """The images of each split scored separately: the asked-for splits, else every split whose
    images are recorded ({} when none is: the table then has one row per stage, split "all")."""
    members = {}
    for split in splits or ws.splits():
        try:
            members[split] = set(ws.split_ids(split))
        except WorkspaceError as error:  # a split ingested before per-image splits: its images are unknown
            announce(f"evaluate: split {split} not scored on its own ({error})", warning=True)
    return members




def label_group_members(ws: Workspace, ids: list[str]) -> dict[str, set[str]]:
    """A mixed dataset's images by the weak labels each carries ({"labels:tags": ..., "labels:scribbles":
    ...}), scored like splits; {} when every image carries the same ones."""
    groups: dict[str, set[str]] = {}
    for image_id in ids:
        groups.setdefault(LABEL_GROUP + ws.label_group(image_id), set()).add(image_id)
    return dict(sorted(groups.items())) if len(groups) > 1 else {}


def table_rows(
    stages: list[str], splits: list[str], totals: Scores, num_classes: int
) -> dict[tuple[str, str, str], ConfusionMatrix]:
    """One row per (mask stage, split), in mask-stage order (round 0 then each round)."""
    rows = {}
    for stage in sorted(stages, key=mask_stage_order):
        round_ = mask_round_of_stage(stage)
        for split in splits or [None]:
            matrix = totals.get((stage, split), ConfusionMatrix(num_classes))
            rows[(stage, "-" if round_ is None else str(round_), split or ALL_IMAGES)] = matrix
    return rows


@flow(name="evaluate")
def evaluate_flow(
    workspace: str,
    stages: list[str],
    run_name: str = "evaluate",
    batch_size: int = 4 * DEFAULT_BATCH_SIZE,
    log_to_mlflow: bool = True,
    splits: list[str] | None = None,
) -> dict[str, dict]:
    """Score mask stages against GT on every image and on each split (default: every split).

    Returns {stage: ConfusionMatrix.to_dict() over all the images, plus "splits": {split:
    the same over that split's images}} (IoUs as fractions) and writes it to
    reports/evaluation-<run_name>.json. With log_to_mlflow, one MLflow run per flow run and
    a nested run per (stage, split): params method, split, round, supervision, stage and the
    settings that made the masks; metrics miou and iou/<class> in percent; the report, a
    confusion-matrix plot and an overlay grid as artifacts.
    """
    return score_stages(workspace, stages, run_name, batch_size, log_to_mlflow, splits)


def evaluation_stages(ws: Workspace, supervision: str, computed: list[str]) -> list[str]:
    """The masks this run computed plus every other finished, non-stale mask stage of the same
    supervision (so one table compares them), baselines first."""
    stages = set(computed)
    for stage in ws.stages():
        found = mask_method_of_stage(stage)
        if found and found[1].supervision == supervision and not stale_chain(ws, stage) and ws.done_ids(stage):
            stages.add(stage)

    return sorted(stages, key=mask_stage_order)


def has_ground_truth(ws: Workspace) -> bool:
    return any(ws.has_array("gt", i) for i in ws.image_ids())


def evaluate_path(
    ws: Workspace, supervision: str, computed: list[str], run_name: str, log_to_mlflow: bool, splits: list[str] | None
) -> dict[str, dict] | None:
    """Score a path's masks against GT; None (with a note) when the workspace has no GT."""
    if not has_ground_truth(ws):
        announce("evaluate: no ground-truth masks in this workspace; nothing to score")
        return None
    stages = evaluation_stages(ws, supervision, computed)
    return evaluate_flow(str(ws.path), stages, run_name=run_name, log_to_mlflow=log_to_mlflow, splits=splits)


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
