"""How should a workspace hold 100k+ images? Files, write and read time of storage layouts.

    .venv/bin/python benchmarks/storage.py [--images 1000] [--batch 16] [--repeats 3] [--reads 300]
        [--codecs-workspace WS]

Writes what ingest + superpixels write for N images of 256x192 (images HxWx3 uint8, gt and
scribbles HxW uint8, boxes (2, 5) int32, tags (2,) int32, superpixels HxW int32; a
completion marker per image and stage) in batches of --batch images, in each layout:

    per-image            the workspace before packs (and old workspaces read by today's code):
                         one Zarr array per (array, image), one marker file per (stage, image)
    workspace packs      today's wsss_core.store.Workspace, as run_batch drives it: a batch's
                         images of one array in one pack (Workspace.packing; one chunk, Blosc
                         LZ4 + crc32c), markers pointing into it; reads by Workspace.read_array,
                         its kept packs emptied before each read (a cold read)
    per-image, batch markers   the same arrays, one marker file per (stage, batch) listing its ids
    (the prototypes measured to choose, not the workspace's code:)
    packs                one Zarr array per (array, batch): rows = the batch's images (flattened,
                         padded to the longest), sharding codec (one shard file, one inner chunk
                         per image, so reading an image reads only its bytes); per-image markers
                         that point at (pack, row, shape)
    packs, batch markers the same packs; one marker per (stage, batch) holding the pointers
    stage arrays         one Zarr array per array name for the whole dataset, (N, H, W[, 3]),
                         sharded along the images (a shard = one batch, one inner chunk per
                         image): Zarr's sharding codec as documented; needs one shape for all
                         images; one marker per (stage, batch)

    numpy files          the floor: numpy.save / numpy.load of the same arrays, a .npy file per
                         (array, image), no markers, no compression

and measures: files per image and bytes on disk per image (every file is one object/PUT on
an object store); write time per image (whole run / N) and its CPU time; read time of one
image's `images` array at random (a fresh reader per read, as a stage's task opens the
workspace; index lookups included); batch read: the images of a batch one by one, as a
stage's task reads them (a fresh reader per batch), per image; the time of one `is_done` lookup of a random image; and concurrent
writers: two processes writing alternate batches at once, then every image read back and
compared (plus, for the stage arrays, two processes writing alternate images of the SAME
shards, which Zarr does not promise to survive). Also: a file written and read in one call
or in pieces, and the pack codecs (zstd, then Blosc LZ4) on a batch of the same arrays. Medians over --repeats; the machine is
shared, so its load is saved with the results. Writes benchmarks/results/storage.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from wsss_core import store  # noqa: E402
from wsss_core.store import Workspace, write_json_atomic  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "storage.json"
H, W = 192, 256
ARRAYS = ("images", "gt", "scribbles", "boxes", "tags")  # ingest; then "superpixels"
STAGES = (("ingest", ARRAYS), ("superpixels", ("superpixels",)))  # (stage, the arrays it writes)
RATIOS = ("write_ms_per_image", "write_cpu_ms_per_image", "read_ms", "batch_read_ms_per_image")  # against numpy files


# ------------------------------------------------------------------------ data
def sample(index: int) -> dict[str, np.ndarray]:
    """One image's arrays, deterministic per index: one of 64 made ones, with the index
    written into its first pixels (so that an image stored in another's place is caught)."""
    data = {name: values.copy() for name, values in _made(index % 64).items()}
    data["images"][0, :8, 0] = np.frombuffer(np.int64(index).tobytes(), dtype=np.uint8)
    data["superpixels"][0, 0] = index
    return data


@functools.lru_cache(maxsize=64)
def _made(seed: int) -> dict[str, np.ndarray]:
    """Arrays compressible like real ones."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(H // 16, W // 16, 3), dtype=np.uint8)
    image = np.kron(coarse, np.ones((16, 16, 1), dtype=np.uint8))
    image = (image.astype(np.int16) + rng.integers(-8, 8, size=image.shape)).clip(0, 255).astype(np.uint8)
    gt = np.kron(rng.integers(0, 5, size=(H // 32, W // 32)), np.ones((32, 32))).astype(np.uint8)
    scribbles = np.full((H, W), 255, dtype=np.uint8)
    for row in rng.integers(0, H, size=4):
        scribbles[row, 20 : W - 20] = gt[row, 20 : W - 20]
    yy, xx = np.mgrid[0:H, 0:W]
    shift = int(rng.integers(0, 12))
    superpixels = (((yy + shift) // 12) * (W // 12 + 1) + (xx + shift) // 12).astype(np.int32)
    boxes = np.array([[1, 10, 10, 100, 90], [2, 50, 60, 200, 180]], dtype=np.int32)
    tags = np.array([1, 2], dtype=np.int32)
    return {"images": image, "gt": gt, "scribbles": scribbles, "boxes": boxes, "tags": tags, "superpixels": superpixels}


def image_id(index: int) -> str:
    return f"img{index:06d}"


def batches_of(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


# --------------------------------------------------------------------- layouts
def listed_in_batch_markers(folder: Path, image_id: str) -> bool:
    """is_done with a marker per batch: a fresh reader has no index, so it reads the markers."""
    return any(image_id in json.loads(p.read_text())["ids"] for p in folder.glob("*.json"))


class WorkspaceLayout:
    """A layout written by wsss_core.store.Workspace."""

    batch_markers = False

    def __init__(self, root: Path):
        self.root = root
        self.ws = Workspace(root)

    def prepare(self, n: int) -> None:
        for stage, _ in STAGES:
            self.ws.begin_stage(stage, "k", {})

    def read_image(self, index: int) -> np.ndarray:
        return Workspace(self.root).read_array("images", image_id(index))

    def read_batch(self, indices: list[int]) -> None:
        """A batch's images one by one, as a stage's task reads them (one workspace, a fresh process's packs)."""
        store.forget_open_packs()
        ws = Workspace(self.root)
        for i in indices:
            ws.read_array("images", image_id(i))

    def is_done(self, index: int) -> bool:
        if self.batch_markers:
            return listed_in_batch_markers(self.root / "markers" / "superpixels" / "k", image_id(index))
        return Workspace(self.root).is_done("superpixels", image_id(index), "k")


class PerImage(WorkspaceLayout):
    """The workspace before packs: one array per (array, image), as old workspaces hold them."""

    name = "per-image"

    def prepare(self, n: int) -> None:
        super().prepare(n)
        for group in ARRAYS:
            self.ws._root("a").require_group(group)

    def write_batch(self, batch: list[int]) -> None:
        for stage, names in STAGES:
            for i in batch:
                data = sample(i)
                for name in names:  # the code path of the workspace before packs
                    self.ws._write_own_array(name, image_id(i), data[name], None, None)
                if not self.batch_markers:
                    self.ws.mark_done(stage, image_id(i), "k")
            if self.batch_markers:
                marker = self.root / "markers" / stage / "k" / f"batch-{batch[0]:06d}.json"
                write_json_atomic(marker, {"ids": [image_id(i) for i in batch]})


class PerImageBatchMarkers(PerImage):
    name = "per-image, batch markers"
    batch_markers = True


class WorkspacePacks(WorkspaceLayout):
    """The workspace's own packs (wsss_core.store), written as run_batch writes them."""

    name = "workspace packs"

    def write_batch(self, batch: list[int]) -> None:
        for stage, names in STAGES:
            with self.ws.packing(stage, "k") as packing:
                for i in batch:
                    data = sample(i)
                    for name in names:
                        self.ws.write_array(name, image_id(i), data[name])
                    self.ws.mark_done(stage, image_id(i), "k")
                done, errors = packing.flush()
                assert not errors and len(done) == len(batch), errors

    def read_image(self, index: int) -> np.ndarray:
        store.forget_open_packs()  # a cold read: as the first read of a pack in a fresh process
        return super().read_image(index)


class Packs:
    """One sharded Zarr array per (array, batch); rows are images."""

    name = "packs"
    batch_markers = False

    def __init__(self, root: Path):
        self.root = root
        self.store = root / "store.zarr"

    def prepare(self, n: int) -> None:
        zarr.open_group(self.store, mode="a")

    def write_batch(self, batch: list[int]) -> None:
        pack = f"pack-{batch[0]:06d}-{os.getpid()}"
        for stage, names in STAGES:
            data = [sample(i) for i in batch]
            pointers: dict[str, dict[str, dict]] = {image_id(i): {} for i in batch}
            for name in names:
                flat = [d[name].reshape(-1) for d in data]
                longest = max(1, max(f.size for f in flat))
                rows = np.zeros((len(flat), longest), dtype=flat[0].dtype)
                for row, values in enumerate(flat):
                    rows[row, : values.size] = values
                array = zarr.create_array(
                    store=self.store, name=f"{name}/_packs/{pack}", shape=rows.shape, dtype=rows.dtype,
                    chunks=(1, longest), shards=rows.shape, overwrite=True,
                )
                array[...] = rows
                for row, i in enumerate(batch):
                    pointers[image_id(i)][name] = {"pack": pack, "row": row, "shape": list(data[row][name].shape)}
            marker_dir = self.root / "markers" / stage / "k"
            if self.batch_markers:
                write_json_atomic(marker_dir / f"{pack}.json", {"ids": pointers})
            else:
                for written, pointer in pointers.items():
                    write_json_atomic(marker_dir / f"{written}.json", {"arrays": pointer})

    def _pointer(self, wanted: str) -> dict:
        folder = self.root / "markers" / "ingest" / "k"
        if not self.batch_markers:
            return json.loads((folder / f"{wanted}.json").read_text())["arrays"]["images"]
        for path in folder.glob("*.json"):  # a fresh reader has no index: it reads the markers
            found = json.loads(path.read_text())["ids"].get(wanted)
            if found:
                return found["images"]
        raise KeyError(wanted)

    def read_image(self, index: int) -> np.ndarray:
        pointer = self._pointer(image_id(index))
        array = zarr.open_array(self.store / "images" / "_packs" / pointer["pack"], mode="r")
        size = int(np.prod(pointer["shape"]))
        return array[pointer["row"], :size].reshape(pointer["shape"])

    def is_done(self, index: int) -> bool:
        folder = self.root / "markers" / "superpixels" / "k"
        if not self.batch_markers:
            return (folder / f"{image_id(index)}.json").exists()
        return listed_in_batch_markers(folder, image_id(index))


class PacksBatchMarkers(Packs):
    name = "packs, batch markers"
    batch_markers = True


class StageArrays:
    """One array per name for the whole dataset, one shard per batch (fixed shapes only)."""

    name = "stage arrays"
    batch_markers = True

    def __init__(self, root: Path, batch: int = 16):
        self.root, self.batch = root, batch
        self.store = root / "store.zarr"

    def prepare(self, n: int) -> None:
        first = sample(0)
        group = zarr.open_group(self.store, mode="a")
        for name, values in first.items():
            group.create_array(
                name, shape=(n, *values.shape), dtype=values.dtype, chunks=(1, *values.shape),
                shards=(self.batch, *values.shape), overwrite=True,
            )

    def write_batch(self, batch: list[int]) -> None:
        group = zarr.open_group(self.store, mode="r+")
        for stage, names in STAGES:
            data = [sample(i) for i in batch]
            for name in names:
                group[name][batch[0] : batch[-1] + 1] = np.stack([d[name] for d in data])
            write_json_atomic(self.root / "markers" / stage / "k" / f"batch-{batch[0]:06d}.json",
                              {"ids": [image_id(i) for i in batch]})

    def write_images(self, indices: list[int]) -> None:
        """One image at a time (for the same-shard hazard): each a read-modify-write of its shard."""
        group = zarr.open_group(self.store, mode="r+")
        for i in indices:
            data = sample(i)
            for name in (*ARRAYS, "superpixels"):
                group[name][i] = data[name]

    def read_image(self, index: int) -> np.ndarray:
        return zarr.open_array(self.store / "images", mode="r")[index]

    def is_done(self, index: int) -> bool:
        return listed_in_batch_markers(self.root / "markers" / "superpixels" / "k", image_id(index))


class NumpyFiles:
    """The floor the issue compares against: numpy.save / numpy.load of the same arrays on the
    same disk, a .npy file per (array, image), no markers, no compression, nothing atomic."""

    name = "numpy files"
    batch_markers = False

    def __init__(self, root: Path):
        self.root = root

    def prepare(self, n: int) -> None:
        for _, names in STAGES:
            for name in names:
                (self.root / name).mkdir(parents=True, exist_ok=True)

    def write_batch(self, batch: list[int]) -> None:
        for _, names in STAGES:
            for i in batch:
                data = sample(i)
                for name in names:
                    np.save(self.root / name / f"{image_id(i)}.npy", data[name])

    def read_image(self, index: int) -> np.ndarray:
        return np.load(self.root / "images" / f"{image_id(index)}.npy")

    def read_batch(self, indices: list[int]) -> None:
        for i in indices:
            self.read_image(i)

    def is_done(self, index: int) -> bool:
        return (self.root / "superpixels" / f"{image_id(index)}.npy").exists()


LAYOUTS = {cls.name: cls for cls in (PerImage, WorkspacePacks, PerImageBatchMarkers, Packs, PacksBatchMarkers, StageArrays, NumpyFiles)}


def read_batch(layout, indices: list[int]) -> None:
    """A batch's images one by one (the layout's own way when it has one, else one read each)."""
    if hasattr(layout, "read_batch"):
        layout.read_batch(indices)
    else:
        for i in indices:
            layout.read_image(i)


def make(name: str, root: Path, batch: int):
    return LAYOUTS[name](root, batch) if name == "stage arrays" else LAYOUTS[name](root)


# ------------------------------------------------------------------ measuring
def disk_usage(root: Path) -> tuple[int, int]:
    files = blocks = 0
    for folder, _, names in os.walk(root):
        for file_name in names:
            files += 1
            blocks += os.stat(os.path.join(folder, file_name)).st_blocks * 512
    return files, blocks


def _writer(name: str, root: str, batch: int, n: int, batches: list[list[int]], start, images: list[int] | None) -> None:
    layout = make(name, Path(root), batch)
    start.wait()
    if images is not None:
        layout.write_images(images)
    else:
        for indices in batches:
            layout.write_batch(indices)


def verify(layout, n: int) -> int:
    """Images whose stored arrays differ from what was written (or are missing)."""
    wrong = 0
    for i in range(n):
        try:
            wrong += not np.array_equal(layout.read_image(i), sample(i)["images"])
        except Exception:  # noqa: BLE001 - missing or broken: wrong
            wrong += 1
    return wrong


def concurrent(name: str, scratch: Path, n: int, batch: int, same_shard: bool = False) -> dict:
    """Two processes at once: alternate batches (or alternate images of the same shards)."""
    root = scratch / "concurrent"
    shutil.rmtree(root, ignore_errors=True)
    layout = make(name, root, batch)
    layout.prepare(n)
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    batches = batches_of(n, batch)
    if same_shard:
        jobs = [(None, list(range(k, n, 2))) for k in (0, 1)]
    else:
        jobs = [(batches[k::2], None) for k in (0, 1)]
    procs = [ctx.Process(target=_writer, args=(name, str(root), batch, n, b or [], start, imgs)) for b, imgs in jobs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    wrong = verify(layout, n)
    shutil.rmtree(root, ignore_errors=True)
    return {"images": n, "wrong": wrong, "exit_codes": [p.exitcode for p in procs]}


def one_run(name: str, scratch: Path, n: int, batch: int, reads: int, seed: int) -> dict:
    root = scratch / "ws"
    shutil.rmtree(root, ignore_errors=True)
    layout = make(name, root, batch)
    layout.prepare(n)
    started, cpu_started = time.perf_counter(), time.process_time()
    for indices in batches_of(n, batch):
        layout.write_batch(indices)
    write_s, write_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    files, blocks = disk_usage(root)
    rng = random.Random(seed)
    picks = [rng.randrange(n) for _ in range(reads)]
    read_ms, done_ms = [], []
    for i in picks:
        t0 = time.perf_counter()
        layout.read_image(i)
        read_ms.append((time.perf_counter() - t0) * 1000)
    for i in picks[: max(20, reads // 10)]:
        t0 = time.perf_counter()
        assert layout.is_done(i)
        done_ms.append((time.perf_counter() - t0) * 1000)
    batch_ms = []
    for indices in rng.sample(batches_of(n, batch), min(10, len(batches_of(n, batch)))):
        t0 = time.perf_counter()
        read_batch(layout, indices)
        batch_ms.append((time.perf_counter() - t0) * 1000 / len(indices))
    shutil.rmtree(root, ignore_errors=True)
    return {
        "write_ms_per_image": write_s * 1000 / n,
        "write_cpu_ms_per_image": write_cpu_s * 1000 / n,
        "batch_read_ms_per_image": statistics.median(batch_ms),
        "files_per_image": files / n,
        "disk_kb_per_image": blocks / 1024 / n,
        "read_ms": statistics.median(read_ms),
        "is_done_ms": statistics.median(done_ms),
    }


def one_call_or_pieces(scratch: Path, size: int = 9 * 2**18, repeats: int = 50) -> dict:
    """A file of `size` bytes (a pack of 16 images of 256x192x3 is about this big) written and
    read in one write()/read() call and in pieces of 1 MiB (what wsss_core/store/pack_files.py
    does), each a new file on this disk; medians in ms."""
    data = memoryview(os.urandom(size))
    folder = scratch / "io-calls"
    folder.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {"write_one_call_ms": [], "write_pieces_ms": [], "read_one_call_ms": [], "read_pieces_ms": []}
    for repeat in range(repeats):
        for how, piece in (("one_call", size), ("pieces", 2**20)):
            path = folder / f"{how}-{repeat}"
            t0 = time.perf_counter()
            with open(path, "wb", buffering=0) as handle:
                for start in range(0, size, piece):
                    handle.write(data[start : start + piece])
            times[f"write_{how}_ms"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            with open(path, "rb", buffering=0) as handle:
                into = bytearray(size)
                view = memoryview(into)
                for start in range(0, size, piece):
                    handle.readinto(view[start : start + piece])
            times[f"read_{how}_ms"].append((time.perf_counter() - t0) * 1000)
    shutil.rmtree(folder, ignore_errors=True)
    return {"bytes": size, **{k: round(statistics.median(v), 3) for k, v in times.items()}}


def codecs(batch: int, workspace: Path | None = None, repeats: int = 15) -> dict:
    """A pack of `batch` images of the `images` and `superpixels` arrays compressed by the
    codecs packs were (zstd level 1 with its checksum) and are written with (Blosc LZ4, byte
    shuffle, then crc32c): KiB on disk, encode and decode ms, per image; medians. The arrays:
    this benchmark's own, or the first images of a workspace (its superpixels computed)."""
    import google_crc32c
    from numcodecs import Blosc, Zstd

    from wsss_core.store.pack_chunks import check_crc32c
    from wsss_core.store.packs import PACK_BLOSC_LEVEL

    def with_crc32c(codec):
        def encode(rows):  # as Zarr's crc32c codec writes it: the checksum, little-endian, after
            data = codec.encode(rows)
            return bytes(data) + np.uint32(google_crc32c.value(bytes(data))).tobytes()

        def decode(data):  # as wsss_core/store/pack_chunks.py reads it
            return codec.decode(check_crc32c(bytearray(data)))

        return encode, decode

    result = {}
    for array in ("images", "superpixels"):
        if workspace is None:
            rows = np.stack([sample(i)[array].reshape(-1) for i in range(batch)])
        else:
            ws = Workspace(workspace)
            rows = np.stack([ws.read_array(array, i).reshape(-1) for i in ws.select_ids(None)[:batch]])
        zstd = Zstd(level=1, checksum=True)
        candidates = {
            "zstd level 1, checksum": (zstd.encode, zstd.decode),
            f"blosc lz4 level {PACK_BLOSC_LEVEL}, shuffle, crc32c": with_crc32c(
                Blosc(cname="lz4", clevel=PACK_BLOSC_LEVEL, shuffle=Blosc.SHUFFLE, typesize=rows.dtype.itemsize)),
        }
        result[array] = {"raw_kib_per_image": round(rows[0].nbytes / 1024, 1)}
        for name, (encode, decode) in candidates.items():
            encode_ms, decode_ms = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                data = bytes(encode(rows))
                encode_ms.append((time.perf_counter() - t0) * 1000 / batch)
                t0 = time.perf_counter()
                back = decode(data)
                decode_ms.append((time.perf_counter() - t0) * 1000 / batch)
            assert bytes(back) == rows.tobytes()
            result[array][name] = {
                "kib_per_image": round(len(data) / 1024 / batch, 1),
                "encode_ms_per_image": round(statistics.median(encode_ms), 3),
                "decode_ms_per_image": round(statistics.median(decode_ms), 3),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--concurrent-images", type=int, default=320)
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS))
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--codecs-workspace", type=Path, default=None,
                        help="also compare the pack codecs on this workspace's images and superpixels")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    results: dict = {
        "images": args.images, "batch": args.batch, "repeats": args.repeats, "image_shape": [H, W, 3],
        "machine": platform.platform(), "cpus": os.cpu_count(), "zarr": zarr.__version__,
        "load_before": os.getloadavg()[0], "layouts": {},
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch_dir:
        scratch = Path(scratch_dir)
        runs: dict[str, list[dict]] = {name: [] for name in args.layouts}
        for repeat in range(args.repeats):  # interleaved, so that load changes hit every layout alike
            for name in args.layouts:
                print(f"{name} (repeat {repeat + 1}) ...", flush=True)
                runs[name].append(one_run(name, scratch, args.images, args.batch, args.reads, repeat))
        for name in args.layouts:
            medians = {k: round(statistics.median(r[k] for r in runs[name]), 3) for k in runs[name][0]}
            print(f"{name}: concurrent writers ...", flush=True)
            medians["concurrent_batches"] = concurrent(name, scratch, args.concurrent_images, args.batch)
            if name == "stage arrays":
                medians["concurrent_same_shard"] = concurrent(name, scratch, args.concurrent_images, args.batch, True)
            medians["runs"] = runs[name]
            results["layouts"][name] = medians
        results["one_call_or_pieces"] = one_call_or_pieces(scratch)
        print("one call or pieces of 1 MiB:", results["one_call_or_pieces"])
    results["codecs"] = codecs(args.batch)
    if args.codecs_workspace:
        results["codecs_on_workspace"] = {"workspace": str(args.codecs_workspace), **codecs(args.batch, args.codecs_workspace)}
    for array, measured in results["codecs"].items():
        print(f"codecs, {array}:", measured)
    for array, measured in results.get("codecs_on_workspace", {}).items():
        print(f"codecs on the workspace, {array}:", measured)
    results["load_after"] = os.getloadavg()[0]
    header = (f"{'layout':<26}{'files/img':>10}{'KB/img':>8}{'write ms/img':>13}{'(cpu)':>7}{'read ms':>9}"
              f"{'batch read':>11}{'is_done ms':>11}  concurrent")
    print(header)
    for name, r in results["layouts"].items():
        both = f"{r['concurrent_batches']['wrong']} wrong of {r['concurrent_batches']['images']}"
        if "concurrent_same_shard" in r:
            both += f"; same shards: {r['concurrent_same_shard']['wrong']} wrong"
        print(f"{name:<26}{r['files_per_image']:>10.2f}{r['disk_kb_per_image']:>8.1f}{r['write_ms_per_image']:>13.2f}"
              f"{r['write_cpu_ms_per_image']:>7.2f}{r['read_ms']:>9.2f}{r['batch_read_ms_per_image']:>11.2f}"
              f"{r['is_done_ms']:>11.2f}  {both}")
    floor = results["layouts"].get(NumpyFiles.name)
    if floor:  # each layout against numpy.save / numpy.load, ratios of medians of one run
        results["against_numpy"] = {
            name: {measure: round(r[measure] / floor[measure], 2) for measure in RATIOS}
            for name, r in results["layouts"].items() if name != NumpyFiles.name
        }
        for name, ratios in results["against_numpy"].items():
            print(f"{name:<26} x numpy: " + ", ".join(f"{m} {v:.2f}x" for m, v in ratios.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
