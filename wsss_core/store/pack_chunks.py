"""A pack of one chunk read without Zarr: its zarr.json read as JSON, its one chunk file read
and decoded with the same codec libraries Zarr uses (numcodecs, google-crc32c).

Zarr's own read of such a pack costs more than the pack's bytes: about 1 ms to open the array
and 1 ms of call overhead to read it, on top of decoding (benchmarks/storage.py). Only the
layouts packs are written in are read here: a regular grid of one chunk, the default chunk
keys, and the codecs `bytes` then one of `blosc` + `crc32c` or `zstd`. Anything else answers
None and is read through Zarr, as is every sharded pack. The result is the array Zarr reads
(tests/wsss_core/test_pack_chunks.py compares the two).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import Zstd, blosc

# Zarr v3 data types that are numpy's names as they are.
_DATA_TYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"]
)
_DEFAULT_KEYS = {"name": "default", "configuration": {"separator": "/"}}
# Files are written and read in pieces of this size: on the machines measured, one write()
# of 2 MiB or more costs 4-15x the same bytes in 1 MiB pieces, one read() 1.2-3x
# (benchmarks/storage.py, "one call or pieces").
PIECE_BYTES = 2**20


class DamagedChunkError(ValueError):
    """The chunk file's bytes do not decode to the array its metadata describes."""


def read_one_chunk(pack: Path) -> np.ndarray | None:
    """The pack's whole array, or None when its layout is not one read here (see the module
    docstring). Raises OSError when a file cannot be read, and DamagedChunkError (or the
    codec's own error) when the chunk is damaged."""
    meta = json.loads((pack / "zarr.json").read_bytes())
    try:
        layout = _one_chunk_layout(meta)
    except (AttributeError, KeyError, TypeError, ValueError):  # metadata of another shape: Zarr's to read
        layout = None
    if layout is None:
        return None
    shape, dtype, decoders = layout
    data: bytearray | np.ndarray = read_in_pieces(pack / "/".join(["c", *("0" * len(shape))]))
    for decode in reversed(decoders):
        data = decode(data)
    values = np.frombuffer(data, dtype=dtype)
    if values.size != math.prod(shape):
        raise DamagedChunkError(f"{values.size} values where {math.prod(shape)} were written")
    return values.reshape(shape)


def read_in_pieces(path: Path) -> bytearray:
    """A file's bytes, read in pieces of PIECE_BYTES."""
    with open(path, "rb", buffering=0) as handle:
        data = bytearray(os.fstat(handle.fileno()).st_size)
        view, read = memoryview(data), 0
        while read < len(data):
            got = handle.readinto(view[read : read + PIECE_BYTES])
            if not got:  # the file got shorter meanwhile
                return data[:read]
            read += got
        return data


def _one_chunk_layout(meta: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype, list[Any]] | None:
    """(shape, dtype, bytes-to-bytes decoders in write order) of a pack read here, else None."""
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array" or meta.get("storage_transformers"):
        return None
    shape = tuple(meta.get("shape") or ())
    grid = meta.get("chunk_grid") or {}
    if grid.get("name") != "regular" or tuple(grid.get("configuration", {}).get("chunk_shape") or ()) != shape:
        return None
    data_type = meta.get("data_type")  # a dict for some types (strings, datetimes)
    if meta.get("chunk_key_encoding") != _DEFAULT_KEYS or not isinstance(data_type, str) or data_type not in _DATA_TYPES:
        return None
    codecs = meta.get("codecs") or []
    if not codecs or codecs[0].get("name") != "bytes" or codecs[0].get("configuration", {}).get("endian", "little") != "little":
        return None
    decoders = [_decoder(codec) for codec in codecs[1:]]
    if any(decoder is None for decoder in decoders) or [c["name"] for c in codecs[1:]] not in (["blosc", "crc32c"], ["zstd"]):
        return None
    return shape, np.dtype(data_type).newbyteorder("<"), decoders


def _decoder(codec: dict[str, Any]) -> Any:
    name = codec.get("name")
    if name == "crc32c":
        return check_crc32c
    if name == "blosc":
        return blosc.decompress
    if name == "zstd" and (codec.get("configuration") or {}).get("checksum"):
        return Zstd().decode  # the frame says how it was written; its checksum is checked
    return None


def check_crc32c(data: bytearray) -> np.ndarray:
    """The bytes before the stored checksum (4 bytes, little-endian), after checking them."""
    view = np.frombuffer(data, dtype=np.uint8)
    if view.size < 4 or google_crc32c.value(view[:-4]) != int.from_bytes(view[-4:].tobytes(), "little"):
        raise DamagedChunkError("stored and computed crc32c checksums differ")
    return view[:-4]
