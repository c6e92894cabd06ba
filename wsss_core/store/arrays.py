"""An image's arrays, written and read by (group, image id[, name]) wherever they are stored.

An array is in one of two places. Usually a row of a pack (wsss_core/store/packs.py), where the
image's marker points. Else an array of its own, <group>/<id>[/<name>] (one chunk): in workspaces
written before packs (before commit 307d350), whose markers list no arrays, and for an array
written outside a batch (e.g. a fix by hand), which the marker points to with {"own": True}.
Workspace._pointer is the one check of which: False means an array of its own, and each reader
below has that branch beside the pack's. Once a pack holds an image's arrays, _drop_own_arrays
removes the old ones.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsss_core.errors import StoredArrayError, WorkspaceError
from wsss_core.store.names import INGEST_STAGE, PER_IMAGE_LABELS, STORE_NAME, check_image_id, check_stage_name, owning_stage

if TYPE_CHECKING:
    import zarr

    from wsss_core.store.workspace import Workspace


class Arrays:
    """Workspace's per-image arrays (a part of Workspace: see wsss_core/store/workspace.py)."""

    def write_array(
        self, stage: str, image_id: str, data: np.ndarray, name: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Write one image's array of group `stage` (images, superpixels, graphs, ...).

        Inside packing() of the stage that owns the group, it waits for the batch's pack
        (wsss_core/store/packs.py) and is written with the image's marker; elsewhere it
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
        import zarr  # here: a command that only looks at markers never loads Zarr

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

    def _no_array(self, stage: str, image_id: str, why: str) -> WorkspaceError:
        return WorkspaceError(f"{self.path}: no array {stage}/{image_id} ({why})")

    def _open_array(self, stage: str, image_id: str, name: str | None) -> zarr.Array:
        import zarr

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
        """Which weak labels the ingested images carry: "scribbles", "boxes", "tags" (any image), and
        "mixed" when the images do not all carry the same ones."""
        found: set[str] = set()
        for image_id in self.image_ids():
            if "scribbles" not in found and self.has_array("scribbles", image_id):
                found.add("scribbles")
            for kind in ("boxes", "tags"):
                if kind not in found and self.has_array(kind, image_id) and self.array_shape(kind, image_id)[0] > 0:
                    found.add(kind)
            if len(found) == 3:
                break
        if len({self.label_group(image_id) for image_id in self.image_ids()}) > 1:
            found.add("mixed")  # images carry different labels: one mask set from each one's strongest
        return found

    def carries(self, kind: str, image_id: str) -> bool:
        """Whether an image has that weak label: a scribble or manual mask stored, at least one box."""
        if not self.has_array(kind, image_id):
            return False
        return kind != "boxes" or self.array_shape(kind, image_id)[0] > 0

    def carrying(self, kinds: Iterable[str], image_ids: Iterable[str]) -> list[str]:
        """The images of image_ids that carry every one of kinds (PER_IMAGE_LABELS), in order."""
        kinds = list(kinds)
        return [i for i in image_ids if all(self.carries(kind, i) for kind in kinds)]

    def label_group(self, image_id: str) -> str:
        """Which weak labels an image has, as a mixed dataset's report groups them: "manual"
        (a full mask outranks the rest), "boxes+scribbles", "scribbles", "boxes" or "tags" (only tags)."""
        if self.carries("manual", image_id):
            return "manual"
        return "+".join(sorted(kind for kind in PER_IMAGE_LABELS if self.carries(kind, image_id))) or "tags"

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


class ArrayColumn(Sequence):
    """One stage's arrays of some images, read when indexed: a lazy, picklable dataset column
    (training loader workers are spawned processes that get a copy)."""

    def __init__(self, workspace: Workspace, stage: str, image_ids: Sequence[str], name: str | None = None):
        self.workspace, self.stage, self.image_ids, self.name = workspace, stage, list(image_ids), name

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return self.workspace.read_array(self.stage, self.image_ids[index], self.name)


# Reading: a stored file that cannot be decoded (zarr 3 raises RuntimeError "Zstd
# decompression error" for a truncated chunk, ValueError for a broken zarr.json) is a
# StoredArrayError naming the file. Plain OSErrors pass unchanged: the runner retries
# them as passing I/O trouble rather than recomputing the array.
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
