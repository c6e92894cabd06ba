"""Damage one stored array on disk, as a bad disk or a copy cut short would (for repair tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wsss_core.store import Workspace


def damage(ws: Workspace, group: str, image_id: str, name: str | None = None, whole_file: bool = False) -> Path:
    """Make one image's array unreadable and return the file damaged.

    An array of its own: its chunk cut in half. A packed array: in a pack of one chunk (the
    usual pack) bytes in the middle of the chunk are overwritten, so every image of the pack
    (pack_mates) becomes unreadable; in a sharded pack only its inner chunk is overwritten (the
    pack's other images stay readable), or with whole_file the shard is cut in half.
    """
    path = Path(ws.array_file(group, image_id, name))
    data = path.read_bytes()
    entry = packed_entry(ws, group, image_id, name)
    if entry is None or whole_file:
        path.write_bytes(data[: len(data) // 2])
        return path
    meta = json.loads((path.parents[2] / "zarr.json").read_text())
    if not any(codec["name"] == "sharding_indexed" for codec in meta["codecs"]):
        offset, size = len(data) // 4, max(1, len(data) // 2)
    else:
        rows = int(meta["shape"][0])
        index = np.frombuffer(data[-(rows * 16 + 4) : -4], dtype="<u8").reshape(rows, 2)
        offset, size = (int(v) for v in index[entry["row"]])
        assert size > 8, f"{group}/{image_id}: its inner chunk is not stored (all zeros)"
    damaged = bytearray(data)
    damaged[offset : offset + size] = b"\xff" * size
    path.write_bytes(bytes(damaged))
    return path


def pack_mates(ws: Workspace, group: str, image_id: str, name: str | None = None) -> set[str]:
    """The images whose array sits in the same pack as this image's (itself included): a damaged
    pack of one chunk makes all of them unreadable."""
    entry = packed_entry(ws, group, image_id, name)
    if entry is None:
        return {image_id}
    return set(json.loads((ws.store_path / entry["pack"] / "zarr.json").read_text())["attributes"]["images"])


def packed_entry(ws: Workspace, group: str, image_id: str, name: str | None = None) -> dict | None:
    """The pack entry of an image's array from its marker (None: an array of its own)."""
    from wsss_core.store import owning_stage

    marker = json.loads(Path(ws.marker_file(owning_stage(group), image_id)).read_text())
    arrays = marker.get("arrays")
    return None if arrays is None else arrays[group][name or ""]
