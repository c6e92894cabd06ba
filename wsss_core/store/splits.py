"""Splits: which images each split holds, and so which images the dataset has now.

One JSON file per split, splits/<split>.json = {"split": name, "ids": [sorted ids]}. Not the
Zarr root attributes: those are parsed on every `attrs` read (stage_key, dataset, ...), and
100k ids there would slow all of them; a split file is read only when a split is asked for.
Written whole and atomically (write_json_atomic), by the flow process only, as the
attributes are: add_to_split is a read-modify-write.

A record may hold ids that are no longer ingested (the ingest config changed); readers see
only ingested ids. Workspaces made before these records: see "the legacy split" below.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from wsss_core.errors import WorkspaceError
from wsss_core.store.names import _SPLIT_NAME, INGEST_STAGE, SPLITS_DIR, check_image_id, check_split_name


class Splits:
    """Workspace's splits and the dataset's image ids (a part of Workspace: see
    wsss_core/store/workspace.py)."""

    def _split_file(self, split: str) -> str:
        return f"{SPLITS_DIR}/{check_split_name(split)}.json"

    def _has_record(self, split: str) -> bool:
        return bool(_SPLIT_NAME.match(split)) and self._files.is_file(self._split_file(split))

    def _recorded_splits(self) -> list[str]:
        names = (n[:-5] for n in self._files.files(SPLITS_DIR) if n.endswith(".json"))
        return sorted(n for n in names if _SPLIT_NAME.match(n))  # not the temp files of a write

    def _read_split(self, split: str) -> set[str] | None:
        """The recorded ids of a split, None when it has no record."""
        path = self._split_file(split)
        try:
            return set(json.loads(self._files.read_text(path))["ids"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise WorkspaceError(f"{self._files.show(path)}: unreadable split record ({error})") from None

    def _write_split(self, split: str, image_ids: Iterable[str]) -> None:
        self._files.write_json(self._split_file(split), {"split": split, "ids": sorted(image_ids)})

    def add_to_split(self, split: str, image_ids: Iterable[str]) -> None:
        """Record image_ids as members of split, keeping its earlier members (idempotent).

        Only the flow process calls this. An empty image_ids still records the split
        (it is known to hold no ingested image).
        """
        check_split_name(split)
        new = {check_image_id(i) for i in image_ids}
        current = self._read_split(split)
        if current is not None and new <= current:
            return
        self._write_split(split, (current or set()) | new)

    def set_split(self, split: str, image_ids: Iterable[str]) -> None:
        """Record exactly image_ids as the split's members: its list as read now (ids it no longer
        names leave the dataset's results). Flow process only."""
        self._write_split(check_split_name(split), {check_image_id(i) for i in image_ids})

    def splits(self) -> list[str]:
        """Every split name: those recorded at dataset level and those with a per-image record."""
        return sorted(set(self.dataset.get("splits", [])) | set(self._recorded_splits()))

    def unrecorded_splits(self) -> list[str]:
        """Splits whose images are unknown: ingested before per-image splits, or an interrupted ingest."""
        legacy = self._legacy_split()
        return [s for s in self.splits() if s != legacy and not self._has_record(s)]

    def _check_splits(self, splits: Sequence[str]) -> None:
        known = self.splits()
        for split in splits:
            if split not in known:
                raise WorkspaceError(f"no split {split!r} in this workspace (splits: {', '.join(known) or 'none'})")
        everywhere = self.unrecorded_splits()
        unrecorded = [s for s in everywhere if s in splits]
        if unrecorded:  # name every re-run needed, not only this request's
            runs = " and ".join(f"`wsss ingest --split {s}`" for s in everywhere)
            raise WorkspaceError(
                f"{self.path}: which images are in split(s) {', '.join(unrecorded)} is not recorded "
                f"(workspace made before per-image splits, or an interrupted ingest); re-run {runs} on this "
                "workspace: images already ingested are skipped and their splits recorded"
            )

    def _members(self, split: str) -> set[str]:
        """A checked split's recorded ids (some maybe no longer ingested)."""
        recorded = self._read_split(split) if _SPLIT_NAME.match(split) else None
        if recorded is not None:
            return recorded
        return set(self.image_ids())  # the legacy split: _check_splits let only it through

    def split_ids(self, split: str) -> list[str]:
        """The ingested images of a split, sorted."""
        self._check_splits([split])
        return sorted(self._members(split) & set(self.image_ids()))

    def image_splits(self, image_id: str) -> list[str]:
        """The splits an ingested image belongs to ([] for an image not ingested)."""
        key = self.stage_key(INGEST_STAGE)
        if key is None or not self.is_done(INGEST_STAGE, image_id, key):
            return []
        self._check_splits(self.splits())
        return [s for s in self.splits() if image_id in self._members(s)]

    def select_ids(self, splits: Sequence[str] | None = None) -> list[str]:
        """The images a stage works on: every ingested image (None or empty), else the named splits' ones."""
        ingested = self.image_ids()
        if not splits:
            return ingested
        if isinstance(splits, str):
            splits = [splits]  # not its characters
        self._check_splits(splits)
        members = set().union(*(self._members(s) for s in dict.fromkeys(splits)))
        return [i for i in ingested if i in members]

    def image_ids(self) -> list[str]:
        """The images of the dataset as it is now, sorted: ingested, and named by a split's list
        when it was last ingested (an id dropped from every list is no result any more, though its
        arrays stay until `wsss gc`). Without split records (older workspaces) every ingested image."""
        ingested = self.done_ids(INGEST_STAGE)
        recorded = self._recorded_splits()
        if not recorded or self.unrecorded_splits():
            return sorted(ingested)
        listed: set[str] = set().union(*((self._read_split(s) or set()) for s in recorded))
        return sorted(ingested & listed)

    def dropped_ids(self) -> list[str]:
        """Ids with a marker of any stage, under any key, that are not in the dataset any more
        (image_ids): what `wsss gc` deletes."""
        marked: set[str] = set()
        for stage in self.stages():
            base = self._marker_dir(stage)
            for key in self._files.folders(base):  # a rounds' stage folder (round-1) holds no .json: harmless
                marked |= {n[:-5] for n in self._files.files(f"{base}/{key}") if n.endswith(".json") and not n.startswith(".")}
        return sorted(marked - set(self.image_ids()))

    def _listing_splits(self, image_id: str) -> list[str]:
        legacy = self._legacy_split()
        if legacy is not None:
            return [legacy]
        return [s for s in self._recorded_splits() if image_id in (self._read_split(s) or set())]

    # ---------------------------------------------------------------- the legacy split
    # Workspaces made before per-image split records (before commit 722a285) have only the
    # dataset-level list of split names: with exactly one name, every ingested image is in
    # it: the legacy split, which _legacy_split names (the one check of that format, which
    # unrecorded_splits, _members, _listing_splits and bind_dataset lean on); with several,
    # membership is unknown (unrecorded_splits) until `wsss ingest --split` is re-run for
    # each (cheap: ingested images are skipped, their split recorded).
    def _legacy_split(self) -> str | None:
        """The one split of a workspace made before per-image splits: it holds every ingested image."""
        names = self.dataset.get("splits", [])
        if len(names) == 1 and not self._recorded_splits():
            return names[0]
        return None

    def _pin_legacy_split(self) -> None:
        """Write down the legacy split's images while they are still known to be all of them."""
        legacy = self._legacy_split()
        if legacy is not None and _SPLIT_NAME.match(legacy):
            ingested = self.image_ids()
            if ingested:
                self._write_split(legacy, ingested)
