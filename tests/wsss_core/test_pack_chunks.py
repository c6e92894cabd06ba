"""A pack of one chunk read without Zarr gives what Zarr reads, or leaves the pack to Zarr."""

import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec, ZstdCodec

from tests.wsss_core.test_store import make_workspace, write_batch
from wsss_core.store.pack_chunks import read_one_chunk
from wsss_core.store.pack_files import pack_compressors
from wsss_core.store.packs import PACK_BLOSC_LEVEL

DTYPES = ["uint8", "int32", "int64", "float32", "float64", "bool"]


def _array(dtype: str, shape=(3, 257), seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).integers(0, 100, size=shape)
    return (values % 2 == 0) if dtype == "bool" else values.astype(dtype)


def _written(path, values, **layout):
    array = zarr.create_array(store=str(path), shape=values.shape, dtype=values.dtype, **layout)
    array[...] = values
    return path


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("codecs", ["blosc", "zstd"])
def test_it_reads_what_zarr_reads(tmp_path, dtype, codecs):
    compressors = pack_compressors(PACK_BLOSC_LEVEL) if codecs == "blosc" else ZstdCodec(level=1, checksum=True)
    values = _array(dtype)
    pack = _written(tmp_path / "p", values, chunks=values.shape, compressors=compressors)
    read = read_one_chunk(pack)
    assert read.dtype == values.dtype and read.shape == values.shape
    assert np.array_equal(read, values) and np.array_equal(read, zarr.open_array(str(pack), mode="r")[...])


@pytest.mark.parametrize(
    "layout",
    [
        {"chunks": (1, 257), "compressors": pack_compressors(PACK_BLOSC_LEVEL)},  # more than one chunk
        {"chunks": (1, 257), "shards": (3, 257), "compressors": pack_compressors(PACK_BLOSC_LEVEL)},
        {"chunks": (3, 257), "compressors": ZstdCodec(level=1, checksum=False)},  # nothing would find damage
        {"chunks": (3, 257), "compressors": GzipCodec()},
        {"chunks": (3, 257), "compressors": None},
    ],
)
def test_other_layouts_are_left_to_zarr(tmp_path, layout):
    assert read_one_chunk(_written(tmp_path / "p", _array("int32"), **layout)) is None


@pytest.mark.filterwarnings("ignore:The data type")  # Zarr: no v3 specification for strings yet
@pytest.mark.parametrize("values", [np.array([["ab", "cde"]]), np.array([[1, 2]], dtype="datetime64[s]")])
def test_types_zarr_describes_otherwise_are_left_to_zarr(tmp_path, values):
    # Zarr writes these data types as a dict in zarr.json
    pack = _written(tmp_path / "p", values, chunks=values.shape, compressors=pack_compressors(PACK_BLOSC_LEVEL))
    assert read_one_chunk(pack) is None


@pytest.mark.parametrize("codecs", ["blosc", "zstd"])
def test_a_damaged_chunk_raises(tmp_path, codecs):
    compressors = pack_compressors(PACK_BLOSC_LEVEL) if codecs == "blosc" else ZstdCodec(level=1, checksum=True)
    pack = _written(tmp_path / "p", _array("float32", (4, 5000)), chunks=(4, 5000), compressors=compressors)
    chunk = pack / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3 : len(data) // 2] = b"\xff" * (len(data) // 2 - len(data) // 3)
    chunk.write_bytes(bytes(data))
    with pytest.raises((ValueError, RuntimeError)):
        read_one_chunk(pack)
    chunk.write_bytes(b"\x01\x02")  # shorter than its checksum
    with pytest.raises((ValueError, RuntimeError)):
        read_one_chunk(pack)
    chunk.unlink()
    with pytest.raises(FileNotFoundError):
        read_one_chunk(pack)


def test_a_workspace_pack_is_read_without_zarr_and_any_zarr_reads_it(tmp_path):
    ws = make_workspace(tmp_path)
    ws.begin_stage("superpixels", "k1", {})
    write_batch(ws, "superpixels", "k1", ["a", "b"])
    [pack] = {p.parents[2] for p in (ws.store_path / "superpixels").rglob("c/0/0") if not p.parents[2].name.endswith(".extra")}
    meta = zarr.open_array(str(pack), mode="r")
    assert [type(c).__name__ for c in meta.compressors] == ["BloscCodec", "Crc32cCodec"]  # Zarr's own codecs
    assert np.array_equal(read_one_chunk(pack), meta[...])
    for row, image_id in enumerate(["a", "b"]):
        stored = ws.read_array("superpixels", image_id)
        assert np.array_equal(meta[row, : stored.size].reshape(stored.shape), stored)
