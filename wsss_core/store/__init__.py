"""The Zarr workspace: every per-image array of a dataset run, plus its bookkeeping.

Layout of a workspace directory::

    store.zarr/                 Zarr v3 store; root attributes hold the dataset description and
                                each stage's config and key
      <group>/_packs/<pack>     a batch's images of one array (images, superpixels, graphs' edges,
                                pseudo/gcn-scribbles, ...): one sharded Zarr array, a row per image
                                (flattened; one inner chunk each), written whole by one batch task
      <group>/<id>[/<name>]     one array per (group, image): workspaces written before packs, and
                                arrays written outside a batch (Workspace.write_array alone; it
                                points a packed image's marker to the new array)
    markers/<stage>/<key>/<id>.json   completion markers, written after the image's arrays; a
                                marker of a packed image says where each of its arrays lives; an
                                ingest marker keeps its sources' fingerprints (flows/ingest.py)
    records/failures/<stage>/<id>.json   one failure record per (stage, image); an ingest failure
                                also names the split(s) whose list holds the id
    records/warnings/<stage>/<id>.json   conversions and other notes made while processing
    splits/<split>.json         the ids of one split (e.g. train, val) that were ingested, as its
                                list named them at the last ingest: the dataset is their union
    records/fits/<stage>/<key>.json   the images a dataset-level model was fitted on
    (root attribute "requests") how each pipeline was last asked for, for `wsss retry-failed`

Markers and records are small files written atomically (temp file + rename), one per
image, so any number of processes may write them at once. Arrays: inside
Workspace.packing() (wsss_core.runner.run_batch opens it around every batch), an image's
arrays wait in memory until the batch (or PACK_BYTES of it) is done, then each array
group's images go into one new pack, named uniquely, so no two writers ever share a file
(Zarr is safe across processes only when each writer owns whole shards); then the
images' markers are written, pointing into the packs. An image is still done only when
its marker exists, and a recomputed image (a retry, a repair) goes into a new pack, its
marker pointing there. Reading one image reads its marker, then only its own inner
chunk of the pack. Zarr attributes and split records are written only by the single
flow process.
"""

from __future__ import annotations

import contextvars
import json
import math
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from wsss_core.errors import StoredArrayError, WorkspaceError
from wsss_core.lineage import affected_stages
from wsss_core.store.files import OBJECT_STORE_LIMITS, LocalFiles, workspace_path, write_json_atomic
from wsss_core.store.markers import PREVIOUS, Markers
from wsss_core.store.names import (
    _IMAGE_ID,
    _SPLIT_NAME,
    AFFINITYNET_CHECKPOINT,
    CAM_CHECKPOINT,
    IMAGES,
    INGEST_ARRAYS,
    INGEST_STAGE,
    PACKS,
    SPLITS_DIR,
    STORE_NAME,
    TAGS,
    _safe_name,
    check_image_id,
    check_split_name,
    check_stage_name,
    owning_stage,
    stage_arrays,
)
from wsss_core.store.records import Records, StageRecord, StageStatus, prune_failures, split_counts


# A batch flushes its packs early once its waiting arrays hold this many bytes.
PACK_BYTES = 256 * 2**20
# Opened packs kept per process (packs never change once written: safe to keep open).
PACK_HANDLES = 512
_PACK_HANDLES: OrderedDict[tuple[str, str], zarr.Array] = OrderedDict()
_PACK_LOCK = threading.Lock()
_PACKING: contextvars.ContextVar[PackBatch | None] = contextvars.ContextVar("wsss_packing", default=None)


class Workspace(Markers, Records):
    """A dataset run's workspace directory. Cheap to create and to pickle (holds paths only)."""

    def __init__(self, path: str | Path):
        self.path = workspace_path(path)
        self.store_path = self.path / STORE_NAME
        self._files = LocalFiles(self.path)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # ----------------------------------------------------------------- metadata
    def exists(self) -> bool:
        return self._files.exists(f"{STORE_NAME}/zarr.json")

    def require(self) -> Workspace:
        if not self.exists():
            raise WorkspaceError(f"{self.path}: no workspace here (run `wsss ingest` first)")
        return self

    def _root(self, mode: str = "r") -> zarr.Group:
        return zarr.open_group(self.store_path, mode=mode)

    @property
    def attrs(self) -> dict[str, Any]:
        if not self.exists():
            return {}
        return dict(self._root("r").attrs)

    def _update_attrs(self, **values: Any) -> None:
        self._root("a").attrs.update(values)

    @property
    def dataset(self) -> dict[str, Any]:
        return self.attrs.get("dataset", {})

    @property
    def classes(self) -> list[str]:
        classes = self.dataset.get("classes")
        if not classes:
            raise WorkspaceError(f"{self.path}: workspace has no class list (not ingested yet?)")
        return list(classes)

    def bind_dataset(self, description: dict[str, Any]) -> None:
        """Record which dataset this workspace holds; refuse to mix in another one.

        The identity is the reader's name, format, root and class list; the split is
        not part of it, so several splits of one dataset can share a workspace.
        """
        identity = {k: description.get(k) for k in ("name", "format", "root", "classes")}
        current = self.dataset
        if current:
            mine = {k: current.get(k) for k in identity}
            if mine != identity and [k for k in identity if mine[k] != identity[k]] == ["classes"]:
                raise WorkspaceError(
                    f"{self.path}: the dataset's class list changed since this workspace was made "
                    f"({len(mine['classes'] or [])} -> {len(identity['classes'] or [])} classes); results of one class "
                    "list are never mixed with another's: ingest into a new --workspace (or restore the old list)"
                )
            if mine != identity:
                differing = [k for k in identity if mine[k] != identity[k]]
                raise WorkspaceError(
                    f"{self.path}: workspace was made from dataset {mine['name']!r} "
                    f"(root {mine['root']}, {len(mine['classes'] or [])} classes); "
                    f"refusing to add {identity['name']!r} (root {identity['root']}): "
                    f"{', '.join(differing)} differ. Use a new --workspace."
                )
            if description.get("split") and description["split"] not in current.get("splits", []):
                self._pin_legacy_split()  # a second split name would leave the first one's images unknown
            splits = sorted(set(current.get("splits", [])) | {description.get("split")} - {None})
        else:
            splits = [description["split"]] if description.get("split") else []
        self._update_attrs(dataset={**identity, "splits": splits})

    # ------------------------------------------------------------------- splits
    # Which images each split holds: one JSON file per split, splits/<split>.json =
    # {"split": name, "ids": [sorted ids]}. Not the Zarr root attributes: those are
    # parsed on every `attrs` read (stage_key, dataset, ...), and 100k ids there would
    # slow all of them; a split file is read only when a split is asked for. Written
    # whole and atomically (write_json_atomic), by the flow process only, as the
    # attributes are: add_to_split is a read-modify-write.
    #
    # A record may hold ids that are no longer ingested (the ingest config changed);
    # readers see only ingested ids. Workspaces made before these records have only
    # the dataset-level list of split names: with exactly one name, every ingested
    # image is in it; with several, membership is unknown until `wsss ingest --split`
    # is re-run for each (cheap: ingested images are skipped, their split recorded).

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

    # ------------------------------------------------------------------- stages
    def stage_meta(self, stage: str) -> dict[str, Any] | None:
        return self.attrs.get("stages", {}).get(stage)

    def stage_key(self, stage: str) -> str | None:
        meta = self.stage_meta(stage)
        return meta["key"] if meta else None

    def begin_stage(
        self, stage: str, key: str, config: dict[str, Any], upstream: dict[str, str] | None = None,
        reads: Sequence[str] | None = None,
    ) -> bool:
        """Record the config a stage runs with. Returns True when it changed.

        upstream: the key of each stage it reads; reads: the stages and ingested arrays it
        reads, as its row names them (what a changed input of one image reaches: lineage).

        When the key changes, the old markers and failure records go: the stored
        outputs belong to another config and will be overwritten, never mixed in.
        """
        check_stage_name(stage)
        stages = dict(self.attrs.get("stages", {}))
        old = stages.get(stage)
        changed = old is not None and old["key"] != key
        if changed:
            self._files.remove_tree(self._marker_dir(stage))
            self._files.remove_tree(self._record_dir("failures", stage))
            self._files.remove_tree(self._record_dir("warnings", stage))
            # The packs of the old config: no marker points into them any more.
            for group in stage_arrays(stage):
                self._files.remove_tree(f"{STORE_NAME}/{group}/{PACKS}")
        stages[stage] = {"key": key, "config": config, "upstream": upstream or {}, "time": time.time()}
        if reads is not None:
            stages[stage]["reads"] = list(reads)
        self._update_attrs(stages=stages)
        # Create the stage's group now, from this one process, so that parallel
        # writers never race to create it.
        self._root("a").require_group(stage)
        return changed

    def note_stage(self, stage: str, **values: Any) -> None:
        """Add facts learned while a stage ran to its record (e.g. how many images a model was fitted on)."""
        stages = dict(self.attrs.get("stages", {}))
        if stage not in stages:
            raise WorkspaceError(f"{self.path}: stage {stage!r} has not begun")
        stages[stage] = {**stages[stage], **values}
        self._update_attrs(stages=stages)

    def remember_request(self, name: str, flow: str, parameters: dict[str, Any]) -> None:
        """Record how a pipeline was last asked for (the flow `module:name` and its parameters),
        so that a retry can run its failed images again with the same settings."""
        requests = dict(self.attrs.get("requests", {}))
        requests[name] = {"flow": flow, "parameters": parameters, "time": time.time()}
        self._update_attrs(requests=requests)

    def requests(self) -> dict[str, dict[str, Any]]:
        """Every remembered request by pipeline name, oldest first (the order they ran in)."""
        found = self.attrs.get("requests", {})
        return dict(sorted(found.items(), key=lambda item: item[1].get("time", 0)))

    def stages(self) -> list[str]:
        return sorted(self.attrs.get("stages", {}))

    def is_stale(self, stage: str) -> bool:
        """True when a stage it read from has since run with another config."""
        meta = self.stage_meta(stage)
        if not meta:
            return False
        return any(self.stage_key(up) != key for up, key in meta.get("upstream", {}).items())

    # ------------------------------------------------------------------- arrays
    def write_array(
        self, stage: str, image_id: str, data: np.ndarray, name: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Write one image's array of group `stage` (images, superpixels, graphs, ...).

        Inside packing() of the stage that owns the group, it waits for the batch's pack
        (see the module docstring) and is written with the image's marker; elsewhere it
        is written at once, as an array of its own (one chunk: its writer owns it whole).
        attributes: JSON values kept with the array (e.g. a mask's confidence), replaced
        with the array when it is written again."""
        check_image_id(image_id)
        batch = self._batch_for(owning_stage(stage))
        if batch is not None:
            batch.add(image_id, stage, name, np.ascontiguousarray(data), attributes)
            return
        self._write_own_array(stage, image_id, np.ascontiguousarray(data), name, attributes)
        self._repoint_own(stage, image_id, name)

    def _repoint_own(self, group: str, image_id: str, name: str | None) -> None:
        """After an array of its own replaced a packed one (a write outside a batch, e.g. a fix
        by hand), the image's marker points to it, so reads find the new array, not the pack."""
        found = self._packed_marker_file(owning_stage(group), image_id)
        if found is None:
            return
        relative, marker = found
        marker["arrays"].setdefault(group, {})[name or ""] = {"own": True}
        self._files.write_json(relative, marker)

    def _write_own_array(
        self, stage: str, image_id: str, data: np.ndarray, name: str | None, attributes: dict[str, Any] | None
    ) -> None:
        array = zarr.create_array(
            store=self.store_path,
            name=self._array_path(stage, image_id, name),
            shape=data.shape,
            dtype=data.dtype,
            chunks=tuple(max(1, s) for s in data.shape),
            overwrite=True,
            attributes=attributes or None,
        )
        if data.size:
            array[...] = data

    @contextmanager
    def packing(self, stage: str, key: str, limit_bytes: int | None = None) -> Iterator[PackBatch]:
        """Collect the arrays and markers a batch of `stage` writes (in this thread) into packs.

        While open, write_array of the stage's groups and mark_done(stage, ..., key) wait
        in the yielded PackBatch; its flush() writes the packs, then the markers. What is
        not flushed when the block ends is dropped (those images are not done).
        """
        batch = PackBatch(self, check_stage_name(stage), key, PACK_BYTES if limit_bytes is None else limit_bytes)
        token = _PACKING.set(batch)
        try:
            yield batch
        finally:
            _PACKING.reset(token)

    def _batch_for(self, stage: str, key: str | None = None) -> PackBatch | None:
        """The open batch of this workspace's stage in this thread, if any."""
        batch = _PACKING.get()
        if batch is None or batch.stage != stage or batch.location != self._location():
            return None
        return batch if key is None or key == batch.key else None

    def _location(self) -> str:
        return str(self.path)

    # Reading: a stored file that cannot be decoded (zarr 3 raises RuntimeError "Zstd
    # decompression error" for a truncated chunk, ValueError for a broken zarr.json) is a
    # StoredArrayError naming the file. Plain OSErrors pass unchanged: the runner retries
    # them as passing I/O trouble rather than recomputing the array.

    def _pointer(self, group: str, image_id: str, name: str | None) -> dict[str, Any] | None | bool:
        """Where an image's array is: its pack entry (a dict), None when the image's marker
        lists its arrays and not this one, False when it is stored as an array of its own
        (no marker of a batch: written before packs, or outside one)."""
        check_image_id(image_id)
        marker = self._packed_marker(owning_stage(group), image_id)
        if marker is None:
            return False
        entry = marker["arrays"].get(group, {}).get(name or "")
        return False if isinstance(entry, dict) and entry.get("own") else entry

    def _packed_marker(self, stage: str, image_id: str) -> dict[str, Any] | None:
        """The image's marker when a batch wrote it (it lists the image's arrays), else None."""
        found = self._packed_marker_file(stage, image_id)
        return None if found is None else found[1]

    def _packed_marker_file(self, stage: str, image_id: str) -> tuple[str, dict[str, Any]] | None:
        """_packed_marker with its file, relative to the workspace."""
        base = f"markers/{stage}"
        found = []
        for key in self._files.folders(base):
            try:
                found.append((key, json.loads(self._files.read_text(f"{base}/{key}/{image_id}.json"))))
            except FileNotFoundError:
                continue
            except ValueError:  # a marker cut short: not packed (its arrays will not be found)
                found.append((key, {}))
        if len(found) > 1:  # an old key's folder left by an interrupted begin_stage
            current = self.stage_key(stage)
            found = [(k, m) for k, m in found if k == current]
        if not found:
            return None
        key, marker = found[0]
        if isinstance(marker, dict) and isinstance(marker.get("arrays"), dict):
            return f"{base}/{key}/{image_id}.json", marker
        return None

    def _pack_entry(self, group: str, image_id: str, name: str | None) -> dict[str, Any] | None | bool:
        """_pointer, or the array itself (key "data") while it waits in this thread's batch."""
        batch = self._batch_for(owning_stage(group))
        if batch is not None:
            waiting = batch.waiting(image_id, group, name)
            if waiting is not None:
                return waiting
        return self._pointer(group, image_id, name)

    def _open_pack(self, group: str, image_id: str, name: str | None, pack: str) -> zarr.Array:
        """A pack's array, opened once per process (packs are never changed once written)."""
        cache_key = (self._location(), pack)
        with _PACK_LOCK:
            handle = _PACK_HANDLES.get(cache_key)
            if handle is not None:
                _PACK_HANDLES.move_to_end(cache_key)
                return handle
        meta = f"{STORE_NAME}/{pack}/zarr.json"
        try:
            handle = zarr.open_array(self.store_path / pack, mode="r")
        except OSError as error:
            if not isinstance(error, FileNotFoundError) or self._files.exists(meta):
                raise
            raise _unreadable(group, image_id, name, self._files.show(meta), error) from None
        except Exception as error:  # noqa: BLE001 - any decoding error of the metadata, or no pack at all
            raise _unreadable(group, image_id, name, self._files.show(meta), error) from error
        with _PACK_LOCK:
            _PACK_HANDLES[cache_key] = handle
            while len(_PACK_HANDLES) > PACK_HANDLES:
                _PACK_HANDLES.popitem(last=False)
        return handle

    def _read_packed(self, group: str, image_id: str, name: str | None, entry: dict[str, Any]) -> np.ndarray:
        if "data" in entry:
            return entry["data"].copy()
        handle = self._open_pack(group, image_id, name, entry["pack"])
        shape = tuple(entry["shape"])
        try:
            values = handle[entry["row"], : math.prod(shape)]
            return values.reshape(shape)
        except OSError:
            raise
        except Exception as error:  # noqa: BLE001 - any decoding error of the data
            raise _unreadable(group, image_id, name, self._files.show(f"{STORE_NAME}/{entry['pack']}/c/0/0"), error) from error

    def _no_array(self, stage: str, image_id: str, why: str) -> WorkspaceError:
        return WorkspaceError(f"{self.path}: no array {stage}/{image_id} ({why})")

    def _open_array(self, stage: str, image_id: str, name: str | None) -> zarr.Array:
        path = self.store_path / self._array_path(stage, image_id, name)
        try:
            return zarr.open_array(path, mode="r")
        except OSError as error:
            if isinstance(error, FileNotFoundError) and not (path / "zarr.json").exists():
                raise self._no_array(stage, image_id, str(error)) from None
            raise
        except Exception as error:  # noqa: BLE001 - any decoding error of the metadata
            if not (path / "zarr.json").exists():  # zarr says ArrayNotFoundError
                raise self._no_array(stage, image_id, str(error)) from None
            raise _unreadable(stage, image_id, name, path / "zarr.json", error) from error

    def read_array(self, stage: str, image_id: str, name: str | None = None) -> np.ndarray:
        """One image's array of group `stage` (images, superpixels, graphs with name edges, ...)."""
        entry = self._pack_entry(stage, image_id, name)
        if entry is None:
            raise self._no_array(stage, image_id, "its marker lists no such array" + (f" {name!r}" if name else ""))
        if entry is not False:
            return self._read_packed(stage, image_id, name, entry)
        array = self._open_array(stage, image_id, name)
        try:
            return array[...]
        except OSError:
            raise
        except Exception as error:  # noqa: BLE001 - any decoding error of the data
            path = self.store_path / self._array_path(stage, image_id, name)
            raise _unreadable(stage, image_id, name, _chunk_file(path), error) from error

    def array_shape(self, stage: str, image_id: str, name: str | None = None) -> tuple[int, ...]:
        """The shape from the array's metadata, without reading its data."""
        entry = self._pack_entry(stage, image_id, name)
        if entry is None:
            raise self._no_array(stage, image_id, "its marker lists no such array")
        if entry is not False:
            return tuple(entry["data"].shape) if "data" in entry else tuple(entry["shape"])
        return tuple(self._open_array(stage, image_id, name).shape)

    def array_attributes(self, stage: str, image_id: str, name: str | None = None) -> dict[str, Any]:
        """An array's attributes, without reading its data ({} if absent or unreadable)."""
        entry = self._pack_entry(stage, image_id, name)
        if entry is None:
            return {}
        if entry is not False:
            attributes = entry.get("attributes")
            return dict(attributes) if isinstance(attributes, dict) else {}
        meta = self.store_path / self._array_path(stage, image_id, name) / "zarr.json"
        try:
            attributes = json.loads(meta.read_text()).get("attributes")
        except (OSError, ValueError, AttributeError):
            return {}
        return attributes if isinstance(attributes, dict) else {}

    def has_array(self, stage: str, image_id: str, name: str | None = None) -> bool:
        entry = self._pack_entry(stage, image_id, name)
        if entry is not False:
            return entry is not None
        return (self.store_path / self._array_path(stage, image_id, name) / "zarr.json").exists()

    def image_arrays(self, stage: str, image_id: str) -> list[tuple[str, str | None]] | None:
        """The (group, name) of every array a done image of a stage has, from its marker;
        None when its arrays are stored one by one (the marker does not list them)."""
        marker = self._packed_marker(check_stage_name(stage), check_image_id(image_id))
        if marker is None:
            return None
        listed = sorted((group, name) for group, names in marker["arrays"].items() for name in names)
        return [(group, name or None) for group, name in listed]

    def stores_arrays(self, stage: str) -> bool:
        """Whether a stage stores arrays per image: a dataset-level stage (a training) marks
        images done but stores none, and its group stays empty."""
        return stage == INGEST_STAGE or bool(self._files.folders(f"{STORE_NAME}/{check_stage_name(stage)}"))

    def array_file(self, stage: str, image_id: str, name: str | None = None) -> str:
        """The file that holds an image's array's data (its pack's shard, or its own chunk), as
        messages name it; for tools and tests that look at the files."""
        entry = self._pointer(stage, image_id, name)
        if entry is None:
            raise self._no_array(stage, image_id, "its marker lists no such array")
        if entry is not False:
            return self._files.show(f"{STORE_NAME}/{entry['pack']}/c/0/0")
        return str(_chunk_file(self.store_path / self._array_path(stage, image_id, name)))

    @staticmethod
    def _array_path(stage: str, image_id: str, name: str | None) -> str:
        check_image_id(image_id)
        return f"{stage}/{image_id}" + (f"/{name}" if name else "")

    def weak_labels(self) -> set[str]:
        """Which weak labels the ingested images carry: "scribbles", "boxes", "tags" (any image)."""
        found: set[str] = set()
        for image_id in self.image_ids():
            if "scribbles" not in found and self.has_array("scribbles", image_id):
                found.add("scribbles")
            for kind in ("boxes", "tags"):
                if kind not in found and self.has_array(kind, image_id) and self.array_shape(kind, image_id)[0] > 0:
                    found.add(kind)
            if len(found) == 3:
                break
        return found

    def _write_pack(self, group: str, name: str | None, pack: str, items: list[tuple[str, np.ndarray]]) -> str:
        """One pack: the images' arrays as rows (flattened, zero-padded), one shard, one inner
        chunk per row. Returns its path in the store."""
        dtype = items[0][1].dtype
        longest = max(1, max(data.size for _, data in items))
        rows = np.zeros((len(items), longest), dtype=dtype)
        for row, (_, data) in enumerate(items):
            rows[row, : data.size] = data.reshape(-1)
        path = f"{group}/{PACKS}/{pack}"
        array = zarr.create_array(
            store=self.store_path, name=path, shape=rows.shape, dtype=dtype, chunks=(1, longest),
            shards=rows.shape, attributes={"images": [image_id for image_id, _ in items], "name": name},
        )
        array[...] = rows
        return path

    def _drop_own_arrays(self, group: str, image_id: str, names: Iterable[str | None]) -> None:
        """Remove an image's arrays stored one by one (a workspace from before packs) once its
        pack holds them: nothing reads them any more."""
        for name in names:
            node = self.store_path / self._array_path(group, image_id, name)
            if (node / "zarr.json").exists() and _node_type(node) == "array":
                shutil.rmtree(node, ignore_errors=True)
        parent = self.store_path / group / image_id
        if any(name is not None for name in names) and parent.is_dir() and [p.name for p in parent.iterdir()] == ["zarr.json"]:
            shutil.rmtree(parent, ignore_errors=True)  # the image's group, now empty

    def stage_reads(self, stages: dict[str, Any] | None = None) -> dict[str, list[str]]:
        """What each stage that ran reads, as recorded by begin_stage (older records: the stages
        whose keys it chains, the ingest stage standing for every ingested array). stages: the
        stage records, when the caller has read them already."""
        reads = {}
        for stage, meta in (self.attrs.get("stages", {}) if stages is None else stages).items():
            named = meta.get("reads")
            if named is None:
                named = [a for up in meta.get("upstream", {}) for a in (INGEST_ARRAYS if up == INGEST_STAGE else (up,))]
            reads[stage] = list(named)
        return reads

    def forget_downstream(self, image_id: str, arrays: Iterable[str]) -> list[str]:
        """Make an image not done in every stage that reads, directly or through other stages,
        one of its changed ingested arrays (lineage.affected_stages over the recorded reads).
        Returns those stages. Called before the new arrays are written, so a crash in between
        leaves the image to be found changed again."""
        stages = self.attrs.get("stages", {})  # read once: this runs per image
        affected = affected_stages(self.stage_reads(stages), set(arrays))
        for stage in affected:
            self._files.remove(f"{self._marker_dir(stage, stages[stage]['key'])}/{check_image_id(image_id)}.json")
        return affected

    def record_fit(self, stage: str, key: str, image_ids: Iterable[str]) -> None:
        """The images a dataset-level stage's model was fitted on (wsss_core.refit counts changes against them)."""
        self._files.write_json(f"records/fits/{check_stage_name(stage)}/{key}.json", {"images": sorted(image_ids)})

    def fitted_ids(self, stage: str, key: str) -> set[str] | None:
        """The images record_fit recorded for the stage's model of key (None: fitted before these records)."""
        try:
            return set(json.loads(self._files.read_text(f"records/fits/{check_stage_name(stage)}/{key}.json"))["images"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _listing_splits(self, image_id: str) -> list[str]:
        legacy = self._legacy_split()
        if legacy is not None:
            return [legacy]
        return [s for s in self._recorded_splits() if image_id in (self._read_split(s) or set())]

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


class PackBatch:
    """A batch's arrays and markers waiting to be written as packs (Workspace.packing).

    Images are added as their step writes them and marked when the step succeeds;
    flush() writes one pack per (array group, name, dtype) holding every marked image,
    then each image's marker (which points into the packs), and forgets them. An image
    that failed is discard()ed: nothing of it is written.
    """

    def __init__(self, workspace: Workspace, stage: str, key: str, limit_bytes: int):
        self.workspace, self.stage, self.key, self.limit_bytes = workspace, stage, key, limit_bytes
        self.location = workspace._location()
        self._arrays: dict[str, dict[tuple[str, str | None], tuple[np.ndarray, dict[str, Any] | None]]] = {}
        self._marked: dict[str, str | None] = {}
        self._details: dict[str, dict[str, Any]] = {}
        self.nbytes = 0

    @property
    def full(self) -> bool:
        return self.nbytes >= self.limit_bytes

    def add(self, image_id: str, group: str, name: str | None, data: np.ndarray, attributes: dict[str, Any] | None) -> None:
        arrays = self._arrays.setdefault(image_id, {})
        if (group, name) in arrays:
            self.nbytes -= arrays[group, name][0].nbytes
        arrays[group, name] = (data.copy(), dict(attributes) if attributes else None)  # the caller may reuse its array
        self.nbytes += data.nbytes

    def waiting(self, image_id: str, group: str, name: str | None) -> dict[str, Any] | None:
        found = self._arrays.get(image_id, {}).get((group, name))
        return None if found is None else {"data": found[0], "attributes": found[1]}

    def mark(self, image_id: str, served_by: str | None = None) -> None:
        self._marked[image_id] = served_by

    def describe(self, image_id: str, details: dict[str, Any]) -> None:
        """Facts for the image's marker (Workspace.describe_done)."""
        self._details.setdefault(image_id, {}).update(details)

    def discard(self, image_id: str) -> None:
        for data, _ in self._arrays.pop(image_id, {}).values():
            self.nbytes -= data.nbytes
        self._marked.pop(image_id, None)
        self._details.pop(image_id, None)

    def flush(self) -> tuple[list[str], dict[str, Exception]]:
        """Write the marked images: packs first, then markers. Returns (the images now done,
        the images that could not be written with the error). Either way they are forgotten;
        images added but not marked stay."""
        marked = dict(self._marked)
        if not marked:
            return [], {}
        ws = self.workspace
        packs: dict[tuple[str, str | None, str], list[tuple[str, np.ndarray]]] = {}
        for image_id in marked:
            for (group, name), (data, _) in self._arrays.get(image_id, {}).items():
                packs.setdefault((group, name, data.dtype.str), []).append((image_id, data))
        pointers: dict[str, dict[str, dict[str, dict[str, Any]]]] = {image_id: {} for image_id in marked}
        pack_id = f"{time.time_ns() // 1_000_000:011x}-{secrets.token_hex(6)}"
        try:
            for (group, name, dtype), items in packs.items():
                several = sum(1 for g, n, _ in packs if (g, n) == (group, name)) > 1
                suffix = (f".{name}" if name else "") + (f".{np.dtype(dtype).name}" if several else "")
                path = ws._write_pack(group, name, pack_id + suffix, items)
                for row, (image_id, data) in enumerate(items):
                    entry: dict[str, Any] = {"pack": path, "row": row, "shape": list(data.shape), "dtype": data.dtype.name}
                    attributes = self._arrays[image_id][group, name][1]
                    if attributes:
                        entry["attributes"] = attributes
                    pointers[image_id].setdefault(group, {})[name or ""] = entry
        except Exception as error:  # noqa: BLE001 - every image of the flush fails with it
            for image_id in marked:
                self.discard(image_id)
            return [], {image_id: error for image_id in marked}
        done, errors = [], {}
        for image_id, served_by in marked.items():
            try:
                ws._write_marker(self.stage, self.key, image_id, served_by, pointers[image_id], self._details.get(image_id))
                done.append(image_id)
            except Exception as error:  # noqa: BLE001 - that image is not done
                errors[image_id] = error
        for image_id in done:
            by_group: dict[str, list[str | None]] = {}
            for group, name in self._arrays.get(image_id, {}):
                by_group.setdefault(group, []).append(name)
            for group, written in by_group.items():
                ws._drop_own_arrays(group, image_id, written)
        for image_id in marked:
            self.discard(image_id)
        return done, errors


class ArrayColumn(Sequence):
    """One stage's arrays of some images, read when indexed: a lazy, picklable dataset column
    (training loader workers are spawned processes that get a copy)."""

    def __init__(self, workspace: Workspace, stage: str, image_ids: Sequence[str], name: str | None = None):
        self.workspace, self.stage, self.image_ids, self.name = workspace, stage, list(image_ids), name

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return self.workspace.read_array(self.stage, self.image_ids[index], self.name)


def _unreadable(array: str, image_id: str, name: str | None, path: Path, error: Exception) -> StoredArrayError:
    problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return StoredArrayError(owning_stage(array), array, image_id, name, path, problem)


def _chunk_file(array_path: Path) -> Path:
    """The file a read of an array failed on: its chunk (write_array stores one), else its folder."""
    chunks = sorted(p for p in (array_path / "c").rglob("*") if p.is_file()) if (array_path / "c").is_dir() else []
    return chunks[0] if len(chunks) == 1 else array_path


def _node_type(node: Path) -> str | None:
    try:
        return json.loads((node / "zarr.json").read_text()).get("node_type")
    except (OSError, ValueError, AttributeError):
        return None


