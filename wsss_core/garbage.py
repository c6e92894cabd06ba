"""`wsss gc`: delete what no result can read any more.

An image that no split list names (Workspace.dropped_ids) is in no result, but its arrays
stay so that it costs nothing if it comes back unchanged. gc deletes them: the image's
markers under every key, its failure and warning records, its arrays stored one by one,
and its rows in the packs. A pack no marker points into goes whole; a pack that still
serves other images is written again without the dead rows (one shard file, swapped in by
a rename, so a reader sees the old shard or the new one). Rows of images recomputed since
(a marker points elsewhere now) are dead too.

Run it while no run writes to the workspace: a batch that has written its pack but not yet
its markers would lose the pack (its images would be recomputed, never served wrong).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zarr

from wsss_core.store import PACKS, PREVIOUS, Workspace, stage_arrays


@dataclass
class GarbageReport:
    images: list[str] = field(default_factory=list)  # the dropped ids whose files went
    markers: int = 0
    packs_deleted: int = 0
    packs_rewritten: int = 0
    bytes_freed: int = 0

    def line(self) -> str:
        return (
            f"gc: {len(self.images)} image(s) no split lists, {self.markers} marker(s) removed, "
            f"{self.packs_deleted} pack(s) deleted, {self.packs_rewritten} rewritten without dead rows, "
            f"{self.bytes_freed / 2**20:.1f} MiB freed"
        )


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def marker_files(ws: Workspace) -> Iterator[tuple[str, Path]]:
    """(image id, marker file) of every marker of every recorded stage, under any key."""
    for stage in ws.stages():
        base = ws.path / "markers" / stage
        if not base.is_dir():
            continue
        for key_dir in base.iterdir():
            if key_dir.is_dir():
                for marker in key_dir.glob("*.json"):
                    if not marker.name.startswith("."):
                        yield marker.stem, marker


def live_rows(ws: Workspace) -> dict[str, set[int]]:
    """{pack path in the store: the rows some marker points to}."""
    live: dict[str, set[int]] = {}
    for _, path in marker_files(ws):
        try:
            arrays = json.loads(path.read_text()).get("arrays") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for names in arrays.values():
            for entry in names.values():
                if isinstance(entry, dict) and "pack" in entry:
                    live.setdefault(entry["pack"], set()).add(int(entry["row"]))
    return live


EMPTIED = "emptied"  # a pack's attribute: the rows gc emptied already


def rewrite_without(store: Path, pack: str, dead: list[int]) -> int:
    """Write the pack's shard again with its dead rows emptied (not stored); returns bytes freed."""
    array = zarr.open_array(store / pack, mode="r")
    if set(dead) <= set(array.attrs.get(EMPTIED, [])):
        return 0
    rows = array[...]
    rows[dead] = 0
    spare = f"{pack}.gc"
    shutil.rmtree(store / spare, ignore_errors=True)
    copy = zarr.create_array(
        store=store, name=spare, shape=rows.shape, dtype=rows.dtype, chunks=array.chunks, shards=array.shards,
        compressors=array.compressors,  # the pack's own (its checksum finds damage)
        config={"write_empty_chunks": True},  # as packs are written: rows all emptied still replace the old chunk
        attributes={**dict(array.attrs), EMPTIED: sorted(dead)},
    )
    copy[...] = rows
    shard, new_shard = store / pack / "c" / "0" / "0", store / spare / "c" / "0" / "0"
    before = shard.stat().st_size if shard.is_file() else 0
    after = new_shard.stat().st_size if new_shard.is_file() else 0
    if new_shard.is_file():
        os.replace(new_shard, shard)
    os.replace(store / spare / "zarr.json", store / pack / "zarr.json")  # the same array, its attributes noting the rows
    shutil.rmtree(store / spare, ignore_errors=True)
    return before - after


def collect_garbage(ws: Workspace) -> GarbageReport:
    """Delete the dropped images' markers, records and arrays, and every pack row no marker serves."""
    ws.require()
    report = GarbageReport(images=ws.dropped_ids())
    dropped = set(report.images)
    for image_id, path in list(marker_files(ws)):
        if image_id in dropped:
            path.unlink(missing_ok=True)
            path.with_name(path.name + PREVIOUS).unlink(missing_ok=True)  # fingerprints kept by invalidate()
            report.markers += 1
    for stage in ws.stages():
        for kind in ("failures", "warnings"):
            for image_id in dropped:
                (ws.path / "records" / kind / stage / f"{image_id}.json").unlink(missing_ok=True)
        for group in stage_arrays(stage):
            for image_id in dropped:
                own = ws.store_path / group / image_id
                if own.is_dir():
                    report.bytes_freed += folder_bytes(own)
                    shutil.rmtree(own, ignore_errors=True)
    live = live_rows(ws)
    for packs in sorted(ws.store_path.rglob(PACKS)):
        for pack_dir in sorted(p for p in packs.iterdir() if p.is_dir() and not p.name.endswith(".gc")):
            pack = pack_dir.relative_to(ws.store_path).as_posix()
            rows = zarr.open_array(pack_dir, mode="r").shape[0]
            dead = [row for row in range(rows) if row not in live.get(pack, set())]
            if len(dead) == rows:
                report.bytes_freed += folder_bytes(pack_dir)
                shutil.rmtree(pack_dir, ignore_errors=True)
                report.packs_deleted += 1
            elif dead:
                report.bytes_freed += rewrite_without(ws.store_path, pack, dead)
                report.packs_rewritten += 1
    return report

