"""Completion markers: markers/<stage>/<key>/<id>.json, written after every array of an
image, so that its presence means the image is whole. A marker of a packed image also says
where each of its arrays lives (wsss_core/store/packs.py); an ingest marker keeps its sources'
fingerprints (flows/ingest.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from wsss_core.errors import WorkspaceError
from wsss_core.store.names import _IMAGE_ID, INGEST_STAGE, check_image_id, check_stage_name

# Beside an ingest marker that invalidate() removed: its sources' fingerprints (not a marker: no .json end).
PREVIOUS = ".previous"


class Markers:
    """Workspace's markers: which images of a stage are done under a key (a part of Workspace:
    see wsss_core/store/workspace.py)."""

    def _marker_dir(self, stage: str, key: str | None = None) -> str:
        base = f"markers/{check_stage_name(stage)}"
        return f"{base}/{key}" if key else base

    def mark_done(self, stage: str, image_id: str, key: str, served_by: str | None = None) -> None:
        """Written last, after every array of the image: its presence means 'whole'.

        Inside packing() of this stage and key, it is written when the batch is flushed,
        after the packs. served_by: for a dataset-level stage, the model file that serves
        this image when it is not the stage's main one (an image that joined after the fit).
        """
        check_image_id(image_id)
        batch = self._batch_for(stage, key)
        if batch is not None:
            batch.mark(image_id, served_by)
            return
        self._write_marker(stage, key, image_id, served_by)

    def describe_done(self, stage: str, image_id: str, key: str, **details: Any) -> None:
        """Facts that the image's marker will keep (ingest: its sources' fingerprints); inside
        packing() of the stage only, before the marker is written."""
        batch = self._batch_for(stage, key)
        if batch is None:
            raise WorkspaceError(f"{stage}: describe_done outside a batch of the stage")
        batch.describe(check_image_id(image_id), details)

    def _write_marker(
        self, stage: str, key: str, image_id: str, served_by: str | None, arrays: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """An image's marker; arrays: where a batch's packs hold its arrays (see PackBatch.flush)."""
        payload: dict[str, Any] = {**(details or {}), "time": time.time()}
        if arrays is not None:
            payload["arrays"] = arrays
        if served_by:
            payload["served_by"] = served_by
        self._files.write_json(f"{self._marker_dir(stage, key)}/{image_id}.json", payload)

    def served_by(self, stage: str, image_id: str, key: str) -> str | None:
        """The model file a dataset-level stage's marker names for this image (None: the main one)."""
        return (self.marker(stage, image_id, key) or {}).get("served_by")

    def marker(self, stage: str, image_id: str, key: str) -> dict[str, Any] | None:
        """An image's marker under key (None: not done; {} for a marker cut short)."""
        try:
            marker = json.loads(self._files.read_text(f"{self._marker_dir(stage, key)}/{check_image_id(image_id)}.json"))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}
        return marker if isinstance(marker, dict) else {}

    def update_marker(self, stage: str, image_id: str, key: str, **values: Any) -> None:
        """Rewrite facts of a done image's marker (e.g. its sources' stat after a touch), keeping the rest."""
        marker = self.marker(stage, image_id, key)
        if marker:
            self._files.write_json(f"{self._marker_dir(stage, key)}/{check_image_id(image_id)}.json", {**marker, **values})

    def forget(self, stage: str, image_id: str) -> None:
        """Make an image not done in a stage (its marker under the current key goes; arrays stay
        until overwritten or `wsss gc`). Any process may call this."""
        key = self.stage_key(stage)
        if key is not None:
            self._files.remove(f"{self._marker_dir(stage, key)}/{check_image_id(image_id)}.json")

    def is_done(self, stage: str, image_id: str, key: str) -> bool:
        if not _IMAGE_ID.match(image_id):
            return False  # an invalid id (e.g. '../x' in a split list) is never done
        return self._files.exists(f"{self._marker_dir(stage, key)}/{image_id}.json")

    def invalidate(self, stage: str, image_id: str, kind: str, message: str) -> None:
        """Make a done image not done: a failure record says why, and its marker goes, so the
        stage's next run (or retry-failed) recomputes it. For a stored array found unreadable.

        An ingest failure names the splits whose record lists the image (so that
        reconcile_ingest_failures can judge it), and its marker's fingerprints are kept aside
        (previous_sources): read again from unchanged sources, the image's later stages stay
        done. Any process may call this.
        """
        key = self.stage_key(stage)
        splits = self._listing_splits(image_id) if stage == INGEST_STAGE else ()
        self.record_failure(stage, image_id, kind, message, key or "", splits)
        if key is not None:
            marker = f"{self._marker_dir(stage, key)}/{check_image_id(image_id)}.json"
            sources = (self.marker(stage, image_id, key) or {}).get("sources") if stage == INGEST_STAGE else None
            if sources is not None:
                self._files.write_json(marker + PREVIOUS, {"sources": sources})
            self._files.remove(marker)

    def previous_sources(self, image_id: str) -> dict[str, Any] | None:
        """The source fingerprints of an ingested image whose marker invalidate() removed (None: none kept)."""
        key = self.stage_key(INGEST_STAGE)
        try:
            kept = self._files.read_text(f"{self._marker_dir(INGEST_STAGE, key)}/{check_image_id(image_id)}.json{PREVIOUS}")
            return json.loads(kept).get("sources")
        except (FileNotFoundError, ValueError, AttributeError):
            return None

    def drop_previous_sources(self, image_id: str) -> None:
        key = self.stage_key(INGEST_STAGE)
        self._files.remove(f"{self._marker_dir(INGEST_STAGE, key)}/{check_image_id(image_id)}.json{PREVIOUS}")

    def done_ids(self, stage: str, key: str | None = None) -> set[str]:
        key = key or self.stage_key(stage)
        if key is None:
            return set()
        return {n[:-5] for n in self._files.files(self._marker_dir(stage, key)) if n.endswith(".json")}

    def done_stamps(self, stage: str, key: str | None = None) -> dict[str, int]:
        """{image id: its marker's mtime in ns} of the stage's done images (under key, default the
        current one). A marker is rewritten whenever its image is recomputed, so a changed stamp
        means a changed output even under an unchanged key (e.g. after `wsss check` repaired it)."""
        key = key or self.stage_key(stage)
        if key is None:
            return {}
        folder = self._marker_dir(stage, key)
        return {name[:-5]: stamp for name, stamp in self._files.stamps(folder).items() if name.endswith(".json")}

    def marker_file(self, stage: str, image_id: str, key: str | None = None) -> str:
        """An image's marker file under the stage's current key (or `key`), as messages name it."""
        return self._files.show(f"{self._marker_dir(stage, key or self.stage_key(stage) or '-')}/{check_image_id(image_id)}.json")
