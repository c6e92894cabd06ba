"""Packs: <group>/_packs/<pack>, a batch's images of one array group in one Zarr array, a row
per image (flattened), one chunk (above ONE_CHUNK_BYTES one shard, an inner chunk per row),
written whole by one batch task. Their files are written and read through pack_files.py.
How a batch collects them and when its markers follow: the package docstring
(wsss_core/store/__init__.py).
"""

from __future__ import annotations

import contextvars
import json
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from wsss_core.store.arrays import _unreadable
from wsss_core.store.names import PACKS, STORE_NAME, check_image_id, check_stage_name, owning_stage

if TYPE_CHECKING:
    import zarr

    from wsss_core.store.workspace import Workspace

# A batch flushes its packs early once its waiting arrays hold this many bytes.
PACK_BYTES = 256 * 2**20
# Opened packs kept per process (packs never change once written: safe to keep open).
PACK_HANDLES = 512
_PACK_HANDLES: OrderedDict[tuple[str, str], zarr.Array] = OrderedDict()
_PACK_LOCK = threading.Lock()
# A pack read from a second time is read whole and its rows kept, up to this many bytes in all:
# a batch task reads its images one by one and they sit in the same packs (one per batch), so
# its reads cost about one read of the pack (a read of one row costs nearly as much as the
# whole pack: Zarr's fixed cost per call). A pack of one chunk is kept from its first read
# (reading one row decodes it all anyway); a sharded one from its second, so that a random
# read of one image reads one row.
PACK_ROWS_BYTES = 64 * 2**20
# A pack up to this size is one Zarr chunk (a read of one row reads it whole, as cheap as one
# row at this size); a bigger one is one shard with an inner chunk per row, so that reading
# one image reads only its bytes.
ONE_CHUNK_BYTES = 16 * 2**20
# Packs are compressed with Blosc's LZ4 (byte shuffle) at this level, with a crc32c checksum
# (pack_files.pack_compressors). Against zstd at level 1, on generated 256x192 images, it
# decoded an image 5x faster and encoded it 2.8x faster, for 14 % more disk (benchmarks/
# storage.py --codecs-workspace). Packs written with zstd before are read as they are.
PACK_BLOSC_LEVEL = 5
_PACK_ROWS: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_PACKS_READ_ONCE: OrderedDict[tuple[str, str], None] = OrderedDict()
_PACKING: contextvars.ContextVar[PackBatch | None] = contextvars.ContextVar("wsss_packing", default=None)


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


class Packs:
    """Workspace's packs: the batch that collects them, their writing and reading, and the
    markers that point into them (a part of Workspace: see wsss_core/store/workspace.py)."""

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
        import zarr

        from wsss_core.store.pack_files import PackStore

        try:
            handle = zarr.open_array(PackStore(self.store_path / pack, read_only=True), mode="r")
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
        shape = tuple(entry["shape"])
        key = (self._location(), entry["pack"])
        rows = _kept_rows(key)
        if rows is None and not _opened_by_zarr(key):  # a pack Zarr opened is not one this reads
            rows = self._read_one_chunk(group, image_id, name, entry["pack"])
            if rows is not None:
                _keep_rows(key, rows)
        if rows is None:
            return self._row_through_zarr(group, image_id, name, entry).reshape(shape)
        return rows[entry["row"], : math.prod(shape)].reshape(shape).copy()  # the kept rows stay as read

    def _row_through_zarr(self, group: str, image_id: str, name: str | None, entry: dict[str, Any]) -> np.ndarray:
        """The image's row of a pack Zarr reads (its values only), from the rows _pack_rows keeps
        or read alone."""
        handle = self._open_pack(group, image_id, name, entry["pack"])
        size = math.prod(entry["shape"])
        with self._decoding(group, image_id, name, entry["pack"]):
            rows = _pack_rows((self._location(), entry["pack"]), handle)
            return rows[entry["row"], :size].copy() if rows is not None else handle[entry["row"], :size]

    def _read_one_chunk(self, group: str, image_id: str, name: str | None, pack: str) -> np.ndarray | None:
        """A pack of one chunk read whole without Zarr (pack_chunks.py); None: another layout."""
        from wsss_core.store.pack_chunks import read_one_chunk

        with self._decoding(group, image_id, name, pack):
            return read_one_chunk(self.store_path / pack)

    @contextmanager
    def _decoding(self, group: str, image_id: str, name: str | None, pack: str) -> Iterator[None]:
        """Reading a pack: a file of it missing or any decoding error makes the image unreadable
        (StoredArrayError, naming the pack or its chunk); other OSErrors pass as they are (transient)."""
        try:
            yield
        except FileNotFoundError as error:
            raise _unreadable(group, image_id, name, self._files.show(f"{STORE_NAME}/{pack}"), error) from None
        except OSError:
            raise
        except Exception as error:  # noqa: BLE001 - any decoding error of the metadata or the data
            raise _unreadable(group, image_id, name, self._files.show(f"{STORE_NAME}/{pack}/c/0/0"), error) from error

    def _write_pack(self, group: str, name: str | None, pack: str, items: list[tuple[str, np.ndarray]]) -> str:
        """One pack: the images' arrays as rows (flattened, zero-padded), one chunk (up to
        ONE_CHUNK_BYTES) or one shard with an inner chunk per row. Returns its path in the store."""
        dtype = items[0][1].dtype
        longest = max(1, max(data.size for _, data in items))
        rows = np.zeros((len(items), longest), dtype=dtype)
        for row, (_, data) in enumerate(items):
            rows[row, : data.size] = data.reshape(-1)
        path = f"{group}/{PACKS}/{pack}"
        import zarr

        from wsss_core.store.pack_files import PackStore, pack_compressors

        layout = {"chunks": rows.shape} if rows.nbytes <= ONE_CHUNK_BYTES else {"chunks": (1, longest), "shards": rows.shape}
        array = zarr.create_array(
            store=PackStore(self.store_path / path), shape=rows.shape, dtype=dtype, **layout,
            compressors=pack_compressors(PACK_BLOSC_LEVEL),
            config={"write_empty_chunks": True},  # every row is an image: no chunk to look at for emptiness
            attributes={"images": [image_id for image_id, _ in items], "name": name},
        )
        array[...] = rows
        return path


def _opened_by_zarr(key: tuple[str, str]) -> bool:
    with _PACK_LOCK:
        return key in _PACK_HANDLES


def _kept_rows(key: tuple[str, str]) -> np.ndarray | None:
    with _PACK_LOCK:
        rows = _PACK_ROWS.get(key)
        if rows is not None:
            _PACK_ROWS.move_to_end(key)
        return rows


def _keep_rows(key: tuple[str, str], rows: np.ndarray) -> None:
    """Keep a pack's rows as read, the least recently read going first past PACK_ROWS_BYTES."""
    if rows.nbytes > PACK_ROWS_BYTES // 4:
        return
    with _PACK_LOCK:
        _PACK_ROWS[key] = rows
        while sum(kept.nbytes for kept in _PACK_ROWS.values()) > PACK_ROWS_BYTES:
            _PACK_ROWS.popitem(last=False)


def _pack_rows(key: tuple[str, str], handle: zarr.Array) -> np.ndarray | None:
    """The pack's rows, read whole and kept (PACK_ROWS_BYTES), when reading one row would read
    them all anyway (a pack of one chunk) or when it is read from a second time; else None:
    read one row. A pack that cannot be read whole (a damaged row) is read row by row, so that
    each image's read names its own trouble."""
    with _PACK_LOCK:
        read_before = key in _PACKS_READ_ONCE
        _PACKS_READ_ONCE[key] = None
        while len(_PACKS_READ_ONCE) > PACK_HANDLES:
            _PACKS_READ_ONCE.popitem(last=False)
    one_chunk = handle.shards is None and tuple(handle.chunks) == tuple(handle.shape)
    if not (read_before or one_chunk) or handle.nbytes > PACK_ROWS_BYTES // 4:
        return None
    try:
        rows = handle[...]
    except Exception:  # noqa: BLE001 - read row by row instead
        return None
    _keep_rows(key, rows)
    return rows


def forget_open_packs() -> None:
    """Close the packs this process keeps open and drop the rows it keeps (a cold read follows)."""
    with _PACK_LOCK:
        _PACK_HANDLES.clear()
        _PACK_ROWS.clear()
        _PACKS_READ_ONCE.clear()
