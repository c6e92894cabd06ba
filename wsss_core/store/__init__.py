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
from wsss_core.store.splits import Splits
from wsss_core.store.stages import Stages


# A batch flushes its packs early once its waiting arrays hold this many bytes.
PACK_BYTES = 256 * 2**20
# Opened packs kept per process (packs never change once written: safe to keep open).
PACK_HANDLES = 512
_PACK_HANDLES: OrderedDict[tuple[str, str], zarr.Array] = OrderedDict()
_PACK_LOCK = threading.Lock()
_PACKING: contextvars.ContextVar[PackBatch | None] = contextvars.ContextVar("wsss_packing", default=None)


class Workspace(Stages, Splits, Markers, Records):
    """A dataset run's workspace directory. Cheap to create and to pickle (holds paths only)."""

    def __init__(self, path: str | Path):
        self.path = workspace_path(path)
        self.store_path = self.path / STORE_NAME
        self._files = LocalFiles(self.path)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"


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


