"""Flow: read a dataset into a workspace, recording which split(s) each image belongs to."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow

from flows.common import DatasetChanges, Execution, StageSummary, engine_session, outcome
from flows.pipeline import record_wall_time, run_stage_batches
from tasks.ingest import ingest_batch
from wsss_core.config import config_hash, config_to_dict
from wsss_core.data.fingerprints import changed_sources, fingerprints
from wsss_core.data.image_io import ReadOptions
from wsss_core.data.readers import DatasetReader, open_reader
from wsss_core.errors import BadInputError, DatasetError
from wsss_core.store import INGEST_STAGE, Workspace, check_image_id, check_split_name


def split_names(split: str | Sequence[str]) -> list[str]:
    """The requested split names, checked, repeats dropped (a bare string is one split)."""
    names = [split] if isinstance(split, str) else list(split)
    if not names:
        raise DatasetError("no split given")
    return list(dict.fromkeys(check_split_name(name) for name in names))


# Read options that only refuse images and never change a stored array: not in the key,
# so raising a limit retries the refused images without re-reading (or making stale)
# anything already ingested.
REFUSAL_OPTIONS = ("max_side",)


def ingest_config(description: dict[str, Any], scribbles_dir: str | None, options: ReadOptions) -> dict[str, Any]:
    """What decides the ingested arrays. The split is not part of it: adding a second split keeps the first."""
    return {
        "dataset": {k: v for k, v in description.items() if k != "split"},
        "scribbles_dir": scribbles_dir,
        "options": {k: v for k, v in config_to_dict(options).items() if k not in REFUSAL_OPTIONS},
    }


def ingest_key(config: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """The ingest stage's key; previous: the stage's recorded meta (None: first ingest).

    Workspaces made before REFUSAL_OPTIONS left the key kept max_side in their recorded
    config: when that config equals this one but for those options, its key stays,
    rather than re-ingesting every image and making every later stage stale.
    """
    if previous is not None:
        options = {k: v for k, v in previous.get("config", {}).get("options", {}).items() if k not in REFUSAL_OPTIONS}
        recorded = {**previous.get("config", {}), "options": options}
        if config_to_dict(recorded) == config_to_dict(config):
            return previous["key"]
    return config_hash(config)


def record_split_members(ws: Workspace, key: str, split_lists: dict[str, list[str]], whole: bool = True) -> None:
    """Each split's members: its listed ids that are ingested under key, now or in an earlier run.

    whole: the lists were read whole, so the record becomes exactly them (an id a list no
    longer names leaves the dataset); else (a retry of some ids) the split only gains ids.
    Ids that failed are not members until a later run ingests them.
    """
    done = ws.done_ids(INGEST_STAGE, key)
    for name, ids in split_lists.items():
        members = [i for i in ids if i in done]
        if whole:
            ws.set_split(name, members)
        else:
            ws.add_to_split(name, members)


@dataclass
class SourceCheck:
    """The listed images sorted by what their sources did since they were ingested."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def check_sources(ws: Workspace, key: str, reader: DatasetReader, image_ids: list[str]) -> SourceCheck:
    """Compare each ingested image's sources with the fingerprints its marker recorded.

    A stat per source file when nothing changed (the recorded hash is reused); a touched
    file whose content is the same stays unchanged, its new stat written to the marker.
    A marker without fingerprints (an older workspace), or sources that cannot be listed,
    count as changed: the task reads the image again and compares the arrays themselves.
    """
    check = SourceCheck()
    for image_id in image_ids:
        marker = ws.marker(INGEST_STAGE, image_id, key) if valid_image_id(image_id) else None
        if marker is None:
            check.new.append(image_id)
            continue
        recorded = marker.get("sources")
        try:
            current = fingerprints(reader.sources(image_id), recorded)
        except Exception:  # noqa: BLE001 - the task reads it again and records what is wrong
            check.changed.append(image_id)
            continue
        if recorded is None or changed_sources(recorded, current):
            check.changed.append(image_id)
            continue
        check.unchanged.append(image_id)
        if current != recorded:
            ws.update_marker(INGEST_STAGE, image_id, key, sources=current)
    return check


def valid_image_id(image_id: str) -> bool:
    try:
        check_image_id(image_id)
    except BadInputError:
        return False
    return True


def open_splits(
    root: str,
    format: str,
    split: str | Sequence[str],
    scribbles_dir: str | None,
    image_dir: str | None,
    options: ReadOptions,
) -> tuple[list[DatasetReader], dict[str, list[str]]]:
    """A reader per requested split, and each split's listed ids by split name.

    A COCO reader's split is its file's stem, whatever was asked. DatasetError when a list is missing.
    """
    names = split_names(split)
    if format == "coco" and len(names) > 1:
        raise DatasetError("a COCO instances file is one split (named after the file); ingest each file in its own run")
    readers = [
        open_reader(
            Path(root), format=format, split=name, scribbles_dir=scribbles_dir, image_dir=image_dir, options=options
        )
        for name in names
    ]
    return readers, {check_split_name(r.describe()["split"]): r.image_ids() for r in readers}


def ingest_request_name(splits: Sequence[str]) -> str:
    """The name an ingest of these splits is remembered under (Workspace.remember_request)."""
    return f"{INGEST_STAGE}/{'+'.join(sorted(splits))}"


def is_ingest_request(name: str) -> bool:
    return name.split("/")[0] == INGEST_STAGE


def run_ingest(
    root: str,
    workspace: str,
    format: str,
    split: str | list[str],
    scribbles_dir: str | None,
    image_dir: str | None,
    options: ReadOptions,
    execution: Execution,
    only_ids: list[str] | None = None,
) -> StageSummary:
    readers, split_lists = open_splits(root, format, split, scribbles_dir, image_dir, options)
    image_ids = list(dict.fromkeys(i for ids in split_lists.values() for i in ids))
    if only_ids is not None:
        wanted = set(only_ids)
        image_ids = [i for i in image_ids if i in wanted]
    ws = Workspace(workspace)
    for reader in readers:
        ws.bind_dataset(reader.describe())  # WorkspaceError when the workspace holds another dataset
    config = ingest_config(readers[0].describe(), scribbles_dir, options)
    key = ingest_key(config, ws.stage_meta(INGEST_STAGE))
    ws.begin_stage(INGEST_STAGE, key, config)
    before = set(ws.image_ids())
    check = check_sources(ws, key, readers[0], image_ids)
    if only_ids is None:  # a retry keeps the request it retries
        ws.remember_request(ingest_request_name(split_lists), "flows.ingest:ingest_flow", {
            "root": root, "format": format, "split": sorted(split_lists), "scribbles_dir": scribbles_dir,
            "image_dir": image_dir, "options": config_to_dict(options),
        })
    try:
        # One reader loads every id: a VOC reader's load() does not depend on its split.
        with engine_session(execution) as runner:
            summary = run_stage_batches(
                runner, ingest_batch, ws, INGEST_STAGE, key, image_ids, {"reader": readers[0]}, execution,
                redo=check.changed,
            )
    finally:
        record_split_members(ws, key, split_lists, whole=only_ids is None)
        # Failures of ids these splits no longer list go; other splits' records stay.
        ws.reconcile_ingest_failures(split_lists)
    summary.changes = DatasetChanges(
        changed=len(check.changed), new=len(check.new), removed=len(before - set(ws.image_ids())),
        unchanged=len(check.unchanged),
    )
    ws.note_stage(INGEST_STAGE, changes=asdict(summary.changes))
    return summary


@flow(name="ingest")
def ingest_flow(
    root: str,
    workspace: str,
    format: str = "voc",
    split: str | list[str] = "train",
    scribbles_dir: str | None = None,
    image_dir: str | None = None,
    options: ReadOptions = ReadOptions(),
    only_ids: list[str] | None = None,
    execution: Execution = Execution(),
) -> StageSummary:
    """Ingest every image of one or more splits; images already ingested are skipped.

    An image listed by several splits is ingested once. Each split's membership is
    recorded for its ingested images, even when the run stops early; a failure record
    of an id that these splits listed before but list no longer is dropped. only_ids:
    ingest just these of the listed images (a retry). Ends Failed (with the count) when
    images failed; the summary is still returned.
    """
    started = time.perf_counter()
    summary = run_ingest(root, workspace, format, split, scribbles_dir, image_dir, options, execution, only_ids)
    record_wall_time(Workspace(workspace), INGEST_STAGE, time.perf_counter() - started)
    return outcome(summary, [summary], workspace)
