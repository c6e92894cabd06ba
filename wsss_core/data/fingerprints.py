"""Fingerprints of an image's sources: how ingest notices that an input changed.

A reader names, per image, every source that feeds it (``DatasetReader.sources``): files
(the image, its GT mask, scribble, annotation) or bytes (a COCO image entry with its
annotations). A source's identity is its content: a SHA-256 of the bytes. Size and mtime
only spare the hash: when both equal what was recorded with the hash, the hash is taken
as it was (as DVC and make do), so an unchanged dataset is checked with a stat per file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# What a reader hands over per source: a file, bytes standing for it, or None (absent).
Source = Path | bytes | None
Fingerprint = dict[str, Any]

_CHUNK = 1 << 20
# The fields that say what the content is; size and mtime only say when to look again.
_CONTENT_FIELDS = ("path", "kind", "sha256")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (also what names a weights file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(source: Source, previous: Fingerprint | None = None) -> Fingerprint | None:
    """One source's fingerprint (None when absent). previous: what was recorded for it, whose
    hash is reused when path, size and mtime are unchanged."""
    if source is None:
        return None
    if isinstance(source, bytes):
        return {"sha256": hashlib.sha256(source).hexdigest()}
    try:
        info = os.stat(source)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):  # a folder where a file should be: reading it fails, loudly
        return {"path": str(source), "kind": "not a file"}
    entry = {"path": str(source), "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    if previous and all(previous.get(k) == entry[k] for k in entry) and previous.get("sha256"):
        return {**entry, "sha256": previous["sha256"]}
    return {**entry, "sha256": file_sha256(Path(source))}


def fingerprints(
    sources: Mapping[str, Source], previous: Mapping[str, Fingerprint | None] | None = None
) -> dict[str, Fingerprint | None]:
    """Every source's fingerprint, by the reader's name for it ("image", "gt", "scribble", ...)."""
    previous = previous or {}
    return {name: fingerprint(source, previous.get(name)) for name, source in sorted(sources.items())}


def content(recorded: Mapping[str, Fingerprint | None]) -> dict[str, Any]:
    """The part of a fingerprint set that says what the sources hold (no sizes, no mtimes)."""
    return {
        name: None if entry is None else {k: entry[k] for k in _CONTENT_FIELDS if k in entry}
        for name, entry in recorded.items()
    }


def changed_sources(before: Mapping[str, Fingerprint | None], now: Mapping[str, Fingerprint | None]) -> list[str]:
    """The sources whose content differs (appeared, went, moved or changed), sorted."""
    old, new = content(before), content(now)
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
