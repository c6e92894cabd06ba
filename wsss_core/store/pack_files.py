"""Zarr's local store and codecs as packs use them (wsss_core/store/packs.py): the same files
and metadata as Zarr's own (any Zarr reads them), with the file work and compression done in
the calling thread and files written and read in pieces. Imported when a pack is first
written, or read through Zarr (a pack of one chunk is read without it: pack_chunks.py), so
that a command that only looks at markers never loads Zarr.

"The calling thread" is Zarr's event-loop thread, one per process: with the threads engine
the workers' pack writes (and reads through Zarr) take turns there (a pack of 16 images
takes a few ms), while their computing runs side by side. pack_chunks.py reads in the
worker's own thread.
"""

from __future__ import annotations

from typing import Any

from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.buffer.core import default_buffer_prototype
from zarr.storage import LocalStore
from zarr.storage._local import _atomic_write

from wsss_core.store.pack_chunks import PIECE_BYTES, read_in_pieces


class PackStore(LocalStore):
    """Zarr's LocalStore for one pack (rooted at it: no parent groups to check and write), doing
    its file work in the calling thread and in pieces of PIECE_BYTES.

    LocalStore hands every file to a thread of a pool; for a pack's two small files the hand-offs
    cost more than the reading and writing. The files are the same as LocalStore's."""

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        if byte_range is not None:
            value = self.get_sync(key, prototype=prototype, byte_range=byte_range)
            return value if value is not None else self._absent(key)
        if not self._is_open:
            await self._open()
        try:
            data = read_in_pieces(self.root / key)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return self._absent(key)
        return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

    def _absent(self, key: str) -> None:
        """A file not there: None (Zarr's "absent"), but a pack read has every chunk file its
        writer wrote, so a missing one is damage, not the fill value Zarr would hand back."""
        if self.read_only and key.startswith("c/"):
            raise FileNotFoundError(f"{self.root / key}: the pack's chunk file is missing")
        return None

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    async def _set(self, key: str, value: Any, exclusive: bool = False) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        view = memoryview(value.as_buffer_like()).cast("B")
        with _atomic_write(path, "wb", exclusive=exclusive) as handle:  # LocalStore's temp file and rename
            for start in range(0, len(view), PIECE_BYTES):
                handle.write(view[start : start + PIECE_BYTES])


class BloscHere(BloscCodec):
    """Zarr's blosc codec (the same metadata: any Zarr reads it) compressing and decompressing
    in the calling thread."""

    async def _encode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
        return self._encode_sync(chunk_bytes, chunk_spec)

    async def _decode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
        return self._decode_sync(chunk_bytes, chunk_spec)


def pack_compressors(level: int) -> tuple[BloscCodec, Crc32cCodec]:
    """Blosc's LZ4 with byte shuffle at `level`, then a crc32c checksum of the compressed bytes
    (LZ4 alone may decode damaged bytes into wrong ones)."""
    return BloscHere(cname="lz4", clevel=level, shuffle="shuffle"), Crc32cCodec()
