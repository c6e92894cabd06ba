"""Flow: re-run exactly the images that have failure records, with the settings they failed under.

    failure records (optionally of some stages, some ids) -> drop the records of ids the
    dataset no longer lists -> ingest again the ones that failed there -> every pipeline the
    workspace remembers, restricted to those images -> one evaluation of what it re-ran

Each pipeline flow remembers how it was last asked for (Workspace.remember_request); a
retry calls the same flow with those parameters and `only_ids`, so an image's finished
stages are skipped and the stage where it failed and every stage after it run again. A
stage whose settings changed since it ran is refused rather than recomputed for a few
images (that would drop every other image's result).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence

from prefect import flow

from flows.common import Execution, announce, flow_result, outcome
from flows.evaluate import evaluate_flow, has_ground_truth
from flows.ingest import is_ingest_request, open_splits
from flows.run import WholeRun
from flows.tracking import flow_run_tracking
from wsss_core.data.image_io import ReadOptions
from wsss_core.errors import UsageError, WsssError
from wsss_core.registries import resolve_target
from wsss_core.store import INGEST_STAGE, Workspace, prune_failures

RETRY_RUN_NAME = "retry-failed"


def failed_ids(ws: Workspace, stages: Sequence[str] | None = None, ids: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The ids with a failure record, per stage: every stage, or the named ones; every id, or the named ones."""
    known = ws.stages()
    for stage in stages or []:
        if stage not in known:
            raise UsageError(f"no stage {stage!r} in {ws.path} (stages: {', '.join(known) or 'none'})")
    wanted = set(ids) if ids else None
    found = {}
    for stage in stages or known:
        failed = sorted({r.image_id for r in ws.failures(stage)} - ws.done_ids(stage))
        failed = [i for i in failed if wanted is None or i in wanted]
        if failed:
            found[stage] = failed
    return found


def dataset_ids(ws: Workspace) -> set[str] | None:
    """Every id the dataset's split lists name now, read through the remembered ingest requests;
    None when a list cannot be read (the dataset moved): then no record is dropped."""
    ingests = [r["parameters"] for name, r in ws.requests().items() if is_ingest_request(name)]
    if not ingests or set(ws.splits()) - {s for params in ingests for s in params["split"]}:
        return None  # a split ingested before requests were remembered: its list is unknown
    listed: set[str] = set()
    try:
        for params in ingests:
            _, split_lists = open_splits(**{**params, "options": ReadOptions(**params["options"])})
            listed.update(*split_lists.values())
    except (WsssError, OSError) as error:
        announce(f"retry-failed: cannot list the dataset ({error}); keeping every failure record", warning=True)
        return None
    return listed


def drop_unlisted(ws: Workspace, failed: dict[str, list[str]], listed: set[str] | None) -> int:
    """Remove the failure records of ids the dataset no longer lists (every stage); returns how many went."""
    if listed is None:
        return 0
    dropped = prune_failures(ws, listed)
    for stage, ids in list(failed.items()):
        failed[stage] = [i for i in ids if i in listed]
        if not failed[stage]:
            del failed[stage]
    return len(dropped)


def retry_request(
    name: str, request: dict, only_ids: list[str], execution: Execution, workspace: str, log_to_mlflow: bool
) -> object:
    """Call the remembered flow again with its parameters, on only_ids (its own evaluation off:
    the retry evaluates what it re-ran once, at the end; its trainings log under the retry's run).
    A path's request is read into its flow's request type, also in an older workspace's shape."""
    flow = resolve_target(request["flow"])
    parameters = dict(request["parameters"])
    if is_ingest_request(name):
        parameters["options"] = ReadOptions(**parameters["options"])
        return flow_result(flow, workspace=workspace, only_ids=only_ids, execution=execution, **parameters)
    kind = typing.get_type_hints(flow.fn)["request"]
    remembered = kind.from_dict(parameters)
    quiet = {"evaluate": False, "run_name": RETRY_RUN_NAME, "log_to_mlflow": log_to_mlflow}
    fields = {f.name for f in dataclasses.fields(kind)}
    remembered = dataclasses.replace(remembered, **{k: v for k, v in quiet.items() if k in fields})
    return flow_result(flow, workspace=workspace, request=remembered, only_ids=only_ids, execution=execution)


def retry_failed(
    workspace: str,
    stages: list[str] | None,
    ids: list[str] | None,
    evaluate: bool,
    log_to_mlflow: bool,
    execution: Execution,
) -> WholeRun:
    ws = Workspace(workspace).require()
    failed = failed_ids(ws, stages, ids)
    whole = WholeRun()
    dropped = drop_unlisted(ws, failed, dataset_ids(ws))
    if dropped:
        announce(f"retry-failed: dropped {dropped} failure record(s) of images the dataset no longer lists")
    if not failed:
        announce("retry-failed: no failed images to re-run")
        return whole
    retried = sorted({i for found in failed.values() for i in found})
    announce(f"retry-failed: {len(retried)} image(s): " + ", ".join(f"{s} {len(f)}" for s, f in failed.items()))
    with flow_run_tracking(ws, log_to_mlflow, "retry-failed", {"images": len(retried), "stages": ", ".join(failed)}):
        for name, request in ws.requests().items():
            is_ingest = is_ingest_request(name)
            if is_ingest and INGEST_STAGE not in failed:
                continue
            ids_to_run = failed.get(INGEST_STAGE, []) if is_ingest else retried
            try:
                result = retry_request(name, request, ids_to_run, execution, workspace, log_to_mlflow)
            except WsssError as error:
                whole.skipped[name] = str(error)
                announce(f"retry-failed: {name} not retried: {error}", warning=True)
                continue
            if is_ingest:
                whole.ingest.append(result)
            else:
                whole.paths[name] = result
        remembered = {summary.stage for summary in whole.summaries}
        for stage in failed:
            if stage not in remembered and stage not in whole.skipped:
                whole.skipped[stage] = "no remembered request runs this stage (it ran before retries were possible): re-run its command"
                announce(f"retry-failed: {stage}: {whole.skipped[stage]}", warning=True)
        masks = [stage for run in whole.paths.values() for stage in run.mask_stages]
        if evaluate and masks and any(s.done for s in whole.summaries) and has_ground_truth(ws):
            whole.evaluation = evaluate_flow(workspace, masks, run_name=RETRY_RUN_NAME, log_to_mlflow=log_to_mlflow)
    return whole


@flow(name="retry-failed")
def retry_failed_flow(
    workspace: str,
    stages: list[str] | None = None,
    ids: list[str] | None = None,
    evaluate: bool = True,
    log_to_mlflow: bool = True,
    execution: Execution = Execution(),
) -> WholeRun:
    """Re-run exactly the images with failure records: in the stage where they failed and every
    stage after it, each with the settings its pipeline last ran with.

    stages / ids: only the failures of these stages / these images (default: all). Records
    of ids the dataset no longer lists are dropped; those of images that now succeed are
    cleared. evaluate: score the re-run pipelines' masks when there is ground truth. Ends
    Failed (with the count per stage) when images still fail.
    """
    whole = retry_failed(workspace, stages, ids, evaluate, log_to_mlflow, execution)
    return outcome(whole, whole.summaries, workspace)
