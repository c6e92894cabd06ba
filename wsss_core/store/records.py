"""Per-image records of a workspace: failures and warnings (records/<kind>/<stage>/<id>.json),
and the status counts built on them.

Records are small files written atomically, one per (stage, image), so any process may write
them; reconcile_ingest_failures and prune_failures are for the flow process only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from wsss_core.store.names import INGEST_STAGE, _safe_name, check_stage_name

if TYPE_CHECKING:
    from wsss_core.store.workspace import Workspace


@dataclass(frozen=True)
class StageRecord:
    """A per-image record: a failure or a warning."""

    stage: str
    image_id: str
    kind: str
    message: str
    key: str = ""
    time: float = 0.0
    # Ingest failures: the splits whose list named the id (empty: unknown, as in older records).
    splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", tuple(self.splits))  # a list when read back from JSON


@dataclass(frozen=True)
class StageStatus:
    stage: str
    key: str | None
    done: int
    failed: int
    pending: int
    stale: bool = False


class Records:
    """Workspace's failure and warning records, and its status counts (a part of Workspace:
    see wsss_core/store/workspace.py)."""

    def _record_dir(self, kind: str, stage: str) -> str:
        return f"records/{kind}/{check_stage_name(stage)}"

    def record_failure(
        self, stage: str, image_id: str, kind: str, message: str, key: str = "", splits: Iterable[str] = ()
    ) -> None:
        record = StageRecord(stage, image_id, kind, message, key, time.time(), tuple(sorted(splits)))
        self._files.write_json(f"{self._record_dir('failures', stage)}/{_safe_name(image_id)}.json", asdict(record))

    def clear_failure(self, stage: str, image_id: str) -> None:
        self._files.remove(f"{self._record_dir('failures', stage)}/{_safe_name(image_id)}.json")

    def record_warnings(self, stage: str, image_id: str, messages: Iterable[str], key: str = "") -> None:
        messages = list(messages)
        if messages:
            record = StageRecord(stage, image_id, "warning", "\n".join(messages), key, time.time())
            self._files.write_json(f"{self._record_dir('warnings', stage)}/{_safe_name(image_id)}.json", asdict(record))

    def failures(self, stage: str) -> list[StageRecord]:
        return self._records("failures", stage)

    def warnings(self, stage: str) -> list[StageRecord]:
        return self._records("warnings", stage)

    def _records(self, kind: str, stage: str) -> list[StageRecord]:
        return [record for _, record in self._record_files(kind, stage)]

    def _record_files(self, kind: str, stage: str) -> list[tuple[str, StageRecord]]:
        """Each record with its file, relative to the workspace (older workspaces may name a
        record otherwise than _safe_name)."""
        folder = self._record_dir(kind, stage)
        records = []
        for name in sorted(n for n in self._files.files(folder) if n.endswith(".json") and not n.startswith(".")):
            path = f"{folder}/{name}"
            try:
                records.append((path, StageRecord(**json.loads(self._files.read_text(path)))))
            except (OSError, ValueError, TypeError):
                continue  # removed or replaced while we listed it
        return records

    def reconcile_ingest_failures(self, split_lists: dict[str, Sequence[str]]) -> list[StageRecord]:
        """After ingesting the splits of split_lists (split -> the ids its list names now):
        each ingest failure record names the splits that list its id, and a record whose
        id no split lists any more goes. Returns the records dropped.

        Only the splits ingested now are judged: a record of `train` stays when `val` is
        ingested. A record from before records named splits (none named) goes only when
        every split of the workspace was ingested now and none lists its id. Flow process only.
        """
        members = {split: set(ids) for split, ids in split_lists.items()}
        judged_all = set(self.splits()) <= set(members)
        dropped = []
        for path, record in self._record_files("failures", INGEST_STAGE):
            listing = {split for split, ids in members.items() if record.image_id in ids}
            if record.splits or listing:
                keep = (set(record.splits) - set(members)) | listing
                gone = not keep
            else:  # names no split: unknown, unless every split was judged now
                keep, gone = set(), judged_all
            if gone:
                self._files.remove(path)
                dropped.append(record)
            elif keep != set(record.splits):
                self._files.write_json(path, asdict(replace(record, splits=tuple(sorted(keep)))))
        return dropped

    # ------------------------------------------------------------------- status
    def status(self, stage: str, image_ids: list[str] | None = None) -> StageStatus:
        """Counts for one stage over the given images.

        Default: every image of the dataset (image_ids); for the ingest stage itself, those
        and every image it failed on (a failed id is no ingested image). A stage that runs on
        the images carrying some weak labels (its record's "labels", flows/pipeline.py) counts
        only those: an image without them is neither pending nor failed there.
        """
        key = self.stage_key(stage)
        done_all = self.done_ids(stage, key)
        splits = set(self.splits())
        failed_all = {r.image_id for r in self.failures(stage) if _relevant(r, key, splits)} - done_all
        if image_ids is not None:
            ids = set(image_ids)
        elif stage == INGEST_STAGE:
            ids = set(self.image_ids()) | failed_all  # not the images no list names any more
        else:
            ids = set(self.image_ids())
        needs = (self.stage_meta(stage) or {}).get("labels")
        if needs:
            ids = set(self.carrying(needs, sorted(ids)))
        done, failed = done_all & ids, failed_all & ids
        pending = len(ids) - len(done) - len(failed)
        return StageStatus(stage, key, len(done), len(failed), pending, self.is_stale(stage))


def _relevant(record: StageRecord, key: str | None, splits: set[str]) -> bool:
    """A failure still worth counting. Not one made under another config's key, nor an
    ingest failure none of whose splits is in the workspace: begin_stage and
    reconcile_ingest_failures remove those, but a run interrupted in between may leave one."""
    if record.key and record.key != key:
        return False
    return not record.splits or bool(set(record.splits) & splits)


def prune_failures(ws: Workspace, known_ids: Iterable[str]) -> list[StageRecord]:
    """Drop the failure records, of every stage, of ids that are no longer in the dataset.

    known_ids: every id the dataset's split lists name now, over all the splits of the
    workspace (not only those a run works on: another split's failures would go too).
    Markers, arrays and warnings are left alone: an ingested image that left the lists
    stays in the workspace. Returns the dropped records. Run by the flow process only
    (no stage of this workspace running), e.g. before retrying failed images.
    """
    known = set(known_ids)
    dropped = []
    for stage in ws.stages():
        for path, record in ws._record_files("failures", stage):
            if record.image_id not in known:
                ws._files.remove(path)
                dropped.append(record)
    return dropped


def split_counts(ws: Workspace, stage: str) -> dict[str, StageStatus]:
    """A stage's counts per split, for `wsss status`: one row per split beside the whole-workspace one.

    Splits whose images are not recorded are left out (ws.unrecorded_splits() names
    them). For the ingest stage a split's images are its ingested ones and the failed
    ids whose record names the split (older records name none: they count in no split).
    """
    skip = set(ws.unrecorded_splits())
    failed = ws.failures(stage) if stage == INGEST_STAGE else []
    return {
        split: ws.status(stage, ws.split_ids(split) + [r.image_id for r in failed if split in r.splits])
        for split in ws.splits()
        if split not in skip
    }
