"""The Zarr workspace: every per-image array of a dataset run, plus its bookkeeping.

Layout of a workspace directory::

    store.zarr/                 Zarr v3 store: one array per (stage, image), e.g. images/<id>,
                                superpixels/<id>, pseudo/gcn-scribbles/<id>; root attributes hold the
                                dataset description and each stage's config and key.
    markers/<stage>/<key>/<id>  completion markers, written after the image's arrays
    records/failures/<stage>/<id>.json   one failure record per (stage, image); an ingest failure
                                also names the split(s) whose list holds the id
    records/warnings/<stage>/<id>.json   conversions and other notes made while processing
    splits/<split>.json         the ids of one split (e.g. train, val) that were ingested
    (root attribute "requests") how each pipeline was last asked for, for `wsss retry-failed`

Markers and records are small files written atomically (temp file + rename), one per
image, so any number of processes may write them at once; each process also owns the
whole arrays it writes. Zarr attributes and split records are written only by the
single flow process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from wsss_core.errors import BadInputError, StoredArrayError, WorkspaceError

STORE_NAME = "store.zarr"
SPLITS_DIR = "splits"
INGEST_STAGE = "ingest"
# The array groups the ingest stage writes (tasks/ingest.py write_sample); every other
# group is written by the stage of the same name (superpixels, graphs, seeds/scribbles).
INGEST_ARRAYS = ("images", "gt", "scribbles", "boxes", "tags")
# Trained networks, inside a workspace; both paths read the CAM classifier's.
CAM_CHECKPOINT = Path("models") / "cam" / "model.pt"
AFFINITYNET_CHECKPOINT = Path("models") / "affinitynet" / "model.pt"
_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")
# "s3://bucket/ws", also as pathlib leaves it ("s3:/bucket/ws"); two letters at least, so
# that a Windows drive ("C:/") is a path.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$")
# Why a workspace must be a local (or mounted) directory, for the refusal below.
OBJECT_STORE_LIMITS = (
    "markers, records and splits are written atomically by a local rename, MLflow's store is "
    "SQLite in the workspace and checkpoints are local files"
)


def owning_stage(array: str) -> str:
    """The stage that writes an array group, and so must recompute it: ingest for the
    ingested arrays ("images", "gt", ...), else the stage of that name ("graphs" for
    graphs/<id>/edges, "seeds/scribbles" for seeds/scribbles/<id>/labels)."""
    return INGEST_STAGE if array in INGEST_ARRAYS else array


def workspace_path(path: str | Path) -> Path:
    """A workspace's directory: a path, or a file:// URL; any other URL (s3://, gs://,
    memory://, ...) is refused with a WorkspaceError naming what needs a local path."""
    match = _URL.match(str(path))
    if match is None:
        return Path(path)
    scheme, rest = match.groups()
    if scheme.lower() == "file":
        return Path("/" + rest)
    raise WorkspaceError(
        f"{scheme}://{rest}: object-storage workspaces are not supported yet ({OBJECT_STORE_LIMITS}); "
        "use a local directory or a mounted file system (e.g. s3fs, gcsfuse, NFS)"
    )


def check_image_id(image_id: str) -> str:
    """Image ids become file and array names: letters, digits, '.', '_', '-' only."""
    if not _IMAGE_ID.match(image_id) or image_id in {".", ".."}:
        raise BadInputError(image_id, f"invalid image id {image_id!r} (allowed: letters, digits, '.', '_', '-')")
    return image_id


def check_split_name(split: str) -> str:
    """Split names become file names (splits/<split>.json): letters, digits, '.', '_', '-' only."""
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise WorkspaceError(
            f"invalid split name {split!r} (allowed: letters, digits, '.', '_', '-'; first a letter or digit)"
        )
    return split


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


class Workspace:
    """A dataset run's workspace directory. Cheap to create and to pickle (holds paths only)."""

    def __init__(self, path: str | Path):
        self.path = workspace_path(path)
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

    def _split_file(self, split: str) -> Path:
        return self.path / SPLITS_DIR / f"{check_split_name(split)}.json"

    def _has_record(self, split: str) -> bool:
        return bool(_SPLIT_NAME.match(split)) and self._split_file(split).is_file()

    def _recorded_splits(self) -> list[str]:
        folder = self.path / SPLITS_DIR
        if not folder.is_dir():
            return []
        names = (p.name[:-5] for p in os.scandir(folder) if p.name.endswith(".json") and p.is_file())
        return sorted(n for n in names if _SPLIT_NAME.match(n))  # not the temp files of a write

    def _read_split(self, split: str) -> set[str] | None:
        """The recorded ids of a split, None when it has no record."""
        path = self._split_file(split)
        try:
            return set(json.loads(path.read_text())["ids"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise WorkspaceError(f"{path}: unreadable split record ({error})") from None

    def _write_split(self, split: str, image_ids: Iterable[str]) -> None:
        write_json_atomic(self._split_file(split), {"split": split, "ids": sorted(image_ids)})

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
        """Write one per-image array (one chunk: its writer owns it whole).

        attributes: JSON values stored in the array's metadata (e.g. a mask's confidence),
        replaced with the array when it is written again."""
        data = np.ascontiguousarray(data)
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

    # Reading: a stored file that cannot be decoded (zarr 3 raises RuntimeError "Zstd
    # decompression error" for a truncated chunk, ValueError for a broken zarr.json) is a
    # StoredArrayError naming the file. Plain OSErrors pass unchanged: the runner retries
    # them as passing I/O trouble rather than recomputing the array.

    def _open_array(self, stage: str, image_id: str, name: str | None) -> zarr.Array:
        path = self.store_path / self._array_path(stage, image_id, name)
        try:
            return zarr.open_array(path, mode="r")
        except OSError as error:
            if isinstance(error, FileNotFoundError) and not (path / "zarr.json").exists():
                raise WorkspaceError(f"{self.path}: no array {stage}/{image_id} ({error})") from None
            raise
        except Exception as error:  # noqa: BLE001 - any decoding error of the metadata
            if not (path / "zarr.json").exists():  # zarr says ArrayNotFoundError
                raise WorkspaceError(f"{self.path}: no array {stage}/{image_id} ({error})") from None
            raise _unreadable(stage, image_id, name, path / "zarr.json", error) from error

    def read_array(self, stage: str, image_id: str, name: str | None = None) -> np.ndarray:
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
        return tuple(self._open_array(stage, image_id, name).shape)

    def array_attributes(self, stage: str, image_id: str, name: str | None = None) -> dict[str, Any]:
        """An array's attributes from its zarr.json alone (no chunk read; {} if absent or unreadable)."""
        meta = self.store_path / self._array_path(stage, image_id, name) / "zarr.json"
        try:
            attributes = json.loads(meta.read_text()).get("attributes")
        except (OSError, ValueError, AttributeError):
            return {}
        return attributes if isinstance(attributes, dict) else {}

    def has_array(self, stage: str, image_id: str, name: str | None = None) -> bool:
        return (self.store_path / self._array_path(stage, image_id, name) / "zarr.json").exists()

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

    # ------------------------------------------------------------------ markers
    def _marker_dir(self, stage: str, key: str | None = None) -> Path:
        base = self.path / "markers" / check_stage_name(stage)
        return base / key if key else base

    def mark_done(self, stage: str, image_id: str, key: str, served_by: str | None = None) -> None:
        """Written last, after every array of the image: its presence means 'whole'.

        served_by: for a dataset-level stage, the model file that serves this image when it
        is not the stage's main one (an image that joined after the fit).
        """
        check_image_id(image_id)
        payload: dict[str, Any] = {"time": time.time()}
        if served_by:
            payload["served_by"] = served_by
        write_json_atomic(self._marker_dir(stage, key) / f"{image_id}.json", payload)

    def served_by(self, stage: str, image_id: str, key: str) -> str | None:
        """The model file a dataset-level stage's marker names for this image (None: the main one)."""
        try:
            return json.loads((self._marker_dir(stage, key) / f"{check_image_id(image_id)}.json").read_text()).get("served_by")
        except (FileNotFoundError, ValueError):
            return None

    def is_done(self, stage: str, image_id: str, key: str) -> bool:
        if not _IMAGE_ID.match(image_id):
            return False  # an invalid id (e.g. '../x' in a split list) is never done
        return (self._marker_dir(stage, key) / f"{image_id}.json").exists()

    def invalidate(self, stage: str, image_id: str, kind: str, message: str) -> None:
        """Make a done image not done: a failure record says why, and its marker goes, so the
        stage's next run (or retry-failed) recomputes it. For a stored array found unreadable.

        An ingest failure names the splits whose record lists the image (so that
        reconcile_ingest_failures can judge it). Any process may call this.
        """
        key = self.stage_key(stage)
        splits = self._listing_splits(image_id) if stage == INGEST_STAGE else ()
        self.record_failure(stage, image_id, kind, message, key or "", splits)
        if key is not None:
            (self._marker_dir(stage, key) / f"{check_image_id(image_id)}.json").unlink(missing_ok=True)

    def _listing_splits(self, image_id: str) -> list[str]:
        legacy = self._legacy_split()
        if legacy is not None:
            return [legacy]
        return [s for s in self._recorded_splits() if image_id in (self._read_split(s) or set())]

    def done_ids(self, stage: str, key: str | None = None) -> set[str]:
        key = key or self.stage_key(stage)
        if key is None:
            return set()
        folder = self._marker_dir(stage, key)
        if not folder.is_dir():
            return set()
        return {p.name[:-5] for p in os.scandir(folder) if p.name.endswith(".json") and p.is_file()}

    def done_stamps(self, stage: str, key: str | None = None) -> dict[str, int]:
        """{image id: its marker's mtime in ns} of the stage's done images (under key, default the
        current one). A marker is rewritten whenever its image is recomputed, so a changed stamp
        means a changed output even under an unchanged key (e.g. after `wsss check` repaired it)."""
        key = key or self.stage_key(stage)
        if key is None:
            return {}
        folder = self._marker_dir(stage, key)
        if not folder.is_dir():
            return {}
        stamps = {}
        for entry in os.scandir(folder):
            if entry.name.endswith(".json") and entry.is_file():
                try:
                    stamps[entry.name[:-5]] = entry.stat().st_mtime_ns
                except FileNotFoundError:  # removed meanwhile: not done
                    pass
        return stamps

    def image_ids(self) -> list[str]:
        """Every image ingested so far, sorted."""
        return sorted(self.done_ids(INGEST_STAGE))

    # ------------------------------------------------------------------ records
    def _record_dir(self, kind: str, stage: str) -> Path:
        return self.path / "records" / kind / check_stage_name(stage)

    def record_failure(
        self, stage: str, image_id: str, kind: str, message: str, key: str = "", splits: Iterable[str] = ()
    ) -> None:
        record = StageRecord(stage, image_id, kind, message, key, time.time(), tuple(sorted(splits)))
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
        return [record for _, record in self._record_files(kind, stage)]

    def _record_files(self, kind: str, stage: str) -> list[tuple[Path, StageRecord]]:
        """Each record with its file (older workspaces may name a record otherwise than _safe_name)."""
        folder = self._record_dir(kind, stage)
        if not folder.is_dir():
            return []
        records = []
        for path in sorted(folder.glob("*.json")):
            try:
                records.append((path, StageRecord(**json.loads(path.read_text()))))
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
                path.unlink(missing_ok=True)
                dropped.append(record)
            elif keep != set(record.splits):
                write_json_atomic(path, asdict(replace(record, splits=tuple(sorted(keep)))))
        return dropped

    # ------------------------------------------------------------------- status
    def status(self, stage: str, image_ids: list[str] | None = None) -> StageStatus:
        """Counts for one stage over the given images.

        Default: every ingested image; for the ingest stage itself, every image it
        ingested or failed on (a failed id is no ingested image).
        """
        key = self.stage_key(stage)
        done_all = self.done_ids(stage, key)
        splits = set(self.splits())
        failed_all = {r.image_id for r in self.failures(stage) if _relevant(r, key, splits)} - done_all
        if image_ids is not None:
            ids = set(image_ids)
        elif stage == INGEST_STAGE:
            ids = done_all | failed_all
        else:
            ids = set(self.image_ids())
        done, failed = done_all & ids, failed_all & ids
        pending = len(ids) - len(done) - len(failed)
        return StageStatus(stage, key, len(done), len(failed), pending, self.is_stale(stage))


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
                path.unlink(missing_ok=True)
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


def _safe_name(image_id: str) -> str:
    """The record file name of an id: the id itself when valid (as in older workspaces).

    Records also exist for ids that are not valid (e.g. '../x' or 'uni_é' in a split
    list). Their sanitised form alone would give 'uni_é' and 'uni_ü' one record, so a
    hash of the real id follows, after a '~' that no valid id holds: distinct ids get
    distinct names, and no invalid id's name is a valid id's.
    """
    if _IMAGE_ID.match(image_id):
        return image_id
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return "invalid-" + re.sub(r"[^A-Za-z0-9._-]", "_", image_id)[:150] + "~" + digest
