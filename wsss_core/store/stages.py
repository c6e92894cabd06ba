"""The workspace's Zarr root attributes: the dataset it holds, each stage's config and key
(and what it reads: the lineage of its arrays), and the requests a retry runs again; and the
images a dataset-level model was fitted on (records/fits/<stage>/<key>.json).

Attributes are written by the flow process, each change (read, modify, write the whole
attributes file) under the workspace's attributes lock: two runs of one workspace at once
would otherwise lose each other's stage records.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from wsss_core.errors import WorkspaceError
from wsss_core.lineage import affected_stages
from wsss_core.store.locks import LOCKS, hold_file_lock
from wsss_core.store.names import (
    INGEST_ARRAYS,
    INGEST_STAGE,
    PACKS,
    STORE_NAME,
    check_image_id,
    check_stage_name,
    stage_arrays,
)

if TYPE_CHECKING:
    import zarr

    from wsss_core.store.workspace import Workspace

Method = TypeVar("Method", bound=Callable[..., Any])
ATTRIBUTES_LOCK = ".attributes.lock"  # under locks/, beside the stage locks; no stage name starts with "."
ROOT_META = f"{STORE_NAME}/zarr.json"  # the root group's metadata: its attributes are the workspace's


def _changes_attributes(method: Method) -> Method:
    """Run a read-modify-write of the root attributes under the attributes lock (not re-entrant:
    such a method calls no other one). Held for milliseconds, so a wait is not announced."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with hold_file_lock(self.path / LOCKS / ATTRIBUTES_LOCK, "workspace attributes", on_wait=lambda line: None):
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


class Stages:
    """Workspace's metadata: the dataset and its stages (a part of Workspace: see
    wsss_core/store/workspace.py)."""

    def exists(self) -> bool:
        return self._files.exists(f"{STORE_NAME}/zarr.json")

    def require(self) -> Workspace:
        if not self.exists():
            raise WorkspaceError(f"{self.path}: no workspace here (run `wsss ingest` first)")
        return self

    def _root(self, mode: str = "r") -> zarr.Group:
        import zarr  # here: reading and writing the attributes needs no Zarr (see attrs)

        return zarr.open_group(self.store_path, mode=mode)

    # The root group's attributes are the "attributes" of its zarr.json (Zarr v3), read and
    # written here as the JSON they are: a command that only looks at markers never loads Zarr.
    def _root_meta(self) -> dict[str, Any] | None:
        """The root group's zarr.json (None: no workspace yet)."""
        try:
            return json.loads(self._files.read_text(ROOT_META))
        except FileNotFoundError:
            return None

    @property
    def attrs(self) -> dict[str, Any]:
        return dict((self._root_meta() or {}).get("attributes") or {})

    def _update_attrs(self, **values: Any) -> None:
        meta = self._root_meta()
        if meta is None:
            self._root("a")  # a new workspace: Zarr makes the root group
            meta = self._root_meta() or {}
        meta["attributes"] = {**(meta.get("attributes") or {}), **values}
        self._files.write_json(ROOT_META, meta)

    @property
    def dataset(self) -> dict[str, Any]:
        return self.attrs.get("dataset", {})

    @property
    def classes(self) -> list[str]:
        classes = self.dataset.get("classes")
        if not classes:
            raise WorkspaceError(f"{self.path}: workspace has no class list (not ingested yet?)")
        return list(classes)

    @_changes_attributes
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

    def stage_meta(self, stage: str) -> dict[str, Any] | None:
        return self.attrs.get("stages", {}).get(stage)

    def stage_key(self, stage: str) -> str | None:
        meta = self.stage_meta(stage)
        return meta["key"] if meta else None

    @_changes_attributes
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
        # Create the stage's group now, under the lock, so that parallel writers (batch tasks,
        # another run of the workspace) never race to create it.
        if not self._files.exists(f"{STORE_NAME}/{stage}/zarr.json"):
            self._root("a").require_group(stage)
        return changed

    @_changes_attributes
    def note_stage(self, stage: str, **values: Any) -> None:
        """Add facts learned while a stage ran to its record (e.g. how many images a model was fitted on)."""
        stages = dict(self.attrs.get("stages", {}))
        if stage not in stages:
            raise WorkspaceError(f"{self.path}: stage {stage!r} has not begun")
        stages[stage] = {**stages[stage], **values}
        self._update_attrs(stages=stages)

    @_changes_attributes
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
