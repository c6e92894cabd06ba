"""The Zarr workspace: every per-image array of a dataset run, plus its bookkeeping.

Layout of a workspace directory::

    store.zarr/                 Zarr v3 store: one array per (stage, image), e.g. images/<id>,
                                superpixels/<id>, pseudo/gcn-scribbles/<id>; root attributes hold the
                                dataset description and each stage's config and key.
    markers/<stage>/<key>/<id>  completion markers, written after the image's arrays
    records/failures/<stage>/<id>.json   one failure record per (stage, image)
    records/warnings/<stage>/<id>.json   conversions and other notes made while processing

Markers and records are small files written atomically (temp file + rename), one per
image, so any number of processes may write them at once; each process also owns the
whole arrays it writes. Zarr attributes are written only by the single flow process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from wsss_core.errors import BadInputError, WorkspaceError

STORE_NAME = "store.zarr"
INGEST_STAGE = "ingest"
# Trained networks, inside a workspace; both paths read the CAM classifier's.
CAM_CHECKPOINT = Path("models") / "cam" / "model.pt"
AFFINITYNET_CHECKPOINT = Path("models") / "affinitynet" / "model.pt"
_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")


def check_image_id(image_id: str) -> str:
    """Image ids become file and array names: letters, digits, '.', '_', '-' only."""
    if not _IMAGE_ID.match(image_id) or image_id in {".", ".."}:
        raise BadInputError(image_id, "invalid image id (allowed: letters, digits, '.', '_', '-')")
    return image_id


def check_stage_name(stage: str) -> str:
    if not _STAGE_NAME.match(stage):
        raise ValueError(f"invalid stage name {stage!r}")
    return stage


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class StageRecord:
    """A per-image record: a failure or a warning."""

    stage: str
    image_id: str
    kind: str
    message: str
    key: str = ""
    time: float = 0.0


@dataclass(frozen=True)
class StageStatus:
    stage: str
    key: str | None
    done: int
    failed: int
    pending: int
    stale: bool = False


class Workspace:
    """A dataset run's workspace directory. Cheap to create and to pickle (holds paths only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.store_path = self.path / STORE_NAME

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # ----------------------------------------------------------------- metadata
    def exists(self) -> bool:
        return (self.store_path / "zarr.json").exists()

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
            if mine != identity:
                differing = [k for k in identity if mine[k] != identity[k]]
                raise WorkspaceError(
                    f"{self.path}: workspace was made from dataset {mine['name']!r} "
                    f"(root {mine['root']}, {len(mine['classes'] or [])} classes); "
                    f"refusing to add {identity['name']!r} (root {identity['root']}): "
                    f"{', '.join(differing)} differ. Use a new --workspace."
                )
            splits = sorted(set(current.get("splits", [])) | {description.get("split")} - {None})
        else:
            splits = [description["split"]] if description.get("split") else []
        self._update_attrs(dataset={**identity, "splits": splits})

    # ------------------------------------------------------------------- stages
    def stage_meta(self, stage: str) -> dict[str, Any] | None:
        return self.attrs.get("stages", {}).get(stage)

    def stage_key(self, stage: str) -> str | None:
        meta = self.stage_meta(stage)
        return meta["key"] if meta else None

    def begin_stage(
        self, stage: str, key: str, config: dict[str, Any], upstream: dict[str, str] | None = None
    ) -> bool:
        """Record the config a stage runs with. Returns True when it changed.

        When the key changes, the old markers and failure records go: the stored
        outputs belong to another config and will be overwritten, never mixed in.
        """
        check_stage_name(stage)
        stages = dict(self.attrs.get("stages", {}))
        old = stages.get(stage)
        changed = old is not None and old["key"] != key
        if changed:
            shutil.rmtree(self._marker_dir(stage), ignore_errors=True)
            shutil.rmtree(self._record_dir("failures", stage), ignore_errors=True)
            shutil.rmtree(self._record_dir("warnings", stage), ignore_errors=True)
        stages[stage] = {"key": key, "config": config, "upstream": upstream or {}, "time": time.time()}
        self._update_attrs(stages=stages)
        # Create the stage's group now, from this one process, so that parallel
        # writers never race to create it.
        self._root("a").require_group(stage)
        return changed

    def stages(self) -> list[str]:
        return sorted(self.attrs.get("stages", {}))

    def is_stale(self, stage: str) -> bool:
        """True when a stage it read from has since run with another config."""
        meta = self.stage_meta(stage)
        if not meta:
            return False
        return any(self.stage_key(up) != key for up, key in meta.get("upstream", {}).items())

    # ------------------------------------------------------------------- arrays
    def write_array(self, stage: str, image_id: str, data: np.ndarray, name: str | None = None) -> None:
        """Write one per-image array (one chunk: its writer owns it whole)."""
        data = np.ascontiguousarray(data)
        array = zarr.create_array(
            store=self.store_path,
            name=self._array_path(stage, image_id, name),
            shape=data.shape,
            dtype=data.dtype,
            chunks=tuple(max(1, s) for s in data.shape),
            overwrite=True,
        )
        if data.size:
            array[...] = data

    def _open_array(self, stage: str, image_id: str, name: str | None) -> zarr.Array:
        path = self.store_path / self._array_path(stage, image_id, name)
        try:
            return zarr.open_array(path, mode="r")
        except (FileNotFoundError, zarr.errors.ArrayNotFoundError, KeyError) as error:
            raise WorkspaceError(f"{self.path}: no array {stage}/{image_id} ({error})") from None

    def read_array(self, stage: str, image_id: str, name: str | None = None) -> np.ndarray:
        return self._open_array(stage, image_id, name)[...]

    def array_shape(self, stage: str, image_id: str, name: str | None = None) -> tuple[int, ...]:
        """The shape from the array's metadata, without reading its data."""
        return tuple(self._open_array(stage, image_id, name).shape)

    def has_array(self, stage: str, image_id: str, name: str | None = None) -> bool:
        return (self.store_path / self._array_path(stage, image_id, name) / "zarr.json").exists()

    @staticmethod
    def _array_path(stage: str, image_id: str, name: str | None) -> str:
        check_image_id(image_id)
        return f"{stage}/{image_id}" + (f"/{name}" if name else "")

    # ------------------------------------------------------------------ markers
    def _marker_dir(self, stage: str, key: str | None = None) -> Path:
        base = self.path / "markers" / check_stage_name(stage)
        return base / key if key else base

    def mark_done(self, stage: str, image_id: str, key: str) -> None:
        """Written last, after every array of the image: its presence means 'whole'."""
        check_image_id(image_id)
        write_json_atomic(self._marker_dir(stage, key) / f"{image_id}.json", {"time": time.time()})

    def is_done(self, stage: str, image_id: str, key: str) -> bool:
        if not _IMAGE_ID.match(image_id):
            return False  # an invalid id (e.g. '../x' in a split list) is never done
        return (self._marker_dir(stage, key) / f"{image_id}.json").exists()

    def done_ids(self, stage: str, key: str | None = None) -> set[str]:
        key = key or self.stage_key(stage)
        if key is None:
            return set()
        folder = self._marker_dir(stage, key)
        if not folder.is_dir():
            return set()
        return {p.name[:-5] for p in os.scandir(folder) if p.name.endswith(".json") and p.is_file()}

    def image_ids(self) -> list[str]:
        """Every image ingested so far, sorted."""
        return sorted(self.done_ids(INGEST_STAGE))

    # ------------------------------------------------------------------ records
    def _record_dir(self, kind: str, stage: str) -> Path:
        return self.path / "records" / kind / check_stage_name(stage)

    def record_failure(self, stage: str, image_id: str, kind: str, message: str, key: str = "") -> None:
        record = StageRecord(stage, image_id, kind, message, key, time.time())
        write_json_atomic(self._record_dir("failures", stage) / f"{_safe_name(image_id)}.json", asdict(record))

    def clear_failure(self, stage: str, image_id: str) -> None:
        (self._record_dir("failures", stage) / f"{_safe_name(image_id)}.json").unlink(missing_ok=True)

    def record_warnings(self, stage: str, image_id: str, messages: Iterable[str], key: str = "") -> None:
        messages = list(messages)
        if messages:
            record = StageRecord(stage, image_id, "warning", "\n".join(messages), key, time.time())
            write_json_atomic(self._record_dir("warnings", stage) / f"{_safe_name(image_id)}.json", asdict(record))

    def failures(self, stage: str) -> list[StageRecord]:
        return self._records("failures", stage)

    def warnings(self, stage: str) -> list[StageRecord]:
        return self._records("warnings", stage)

    def _records(self, kind: str, stage: str) -> list[StageRecord]:
        folder = self._record_dir(kind, stage)
        if not folder.is_dir():
            return []
        records = []
        for path in sorted(folder.glob("*.json")):
            try:
                records.append(StageRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # removed or replaced while we listed it
        return records

    # ------------------------------------------------------------------- status
    def status(self, stage: str, image_ids: list[str] | None = None) -> StageStatus:
        """Counts for one stage over the given images.

        Default: every ingested image; for the ingest stage itself, every image it
        ingested or failed on (a failed id is no ingested image).
        """
        key = self.stage_key(stage)
        done_all = self.done_ids(stage, key)
        failed_all = {r.image_id for r in self.failures(stage)} - done_all
        if image_ids is not None:
            ids = set(image_ids)
        elif stage == INGEST_STAGE:
            ids = done_all | failed_all
        else:
            ids = set(self.image_ids())
        done, failed = done_all & ids, failed_all & ids
        pending = len(ids) - len(done) - len(failed)
        return StageStatus(stage, key, len(done), len(failed), pending, self.is_stale(stage))


def _safe_name(image_id: str) -> str:
    """Failure records also exist for ids that are not valid (e.g. '../x' in a split list)."""
    if _IMAGE_ID.match(image_id):
        return image_id
    return "invalid-" + re.sub(r"[^A-Za-z0-9._-]", "_", image_id)[:150]
