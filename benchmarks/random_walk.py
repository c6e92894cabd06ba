"""Sparse random walk (wsss_core.psa.random_walk) vs PSA's dense N x N walk on a 500x375 image.

    .venv/bin/python benchmarks/random_walk.py [--runs 5] [--repeats 5] [--dense-stride4 estimate|run]

Each (variant, stride) runs in a fresh subprocess, so its peak memory is its own:
rss_delta_mb is the rise of the process's peak RSS (ru_maxrss) over its peak before the
first walk; tracemalloc_peak_mb is the peak of numpy/scipy allocations during that walk.
Times are medians over --runs runs. --repeats N measures everything N times (fresh
subprocesses each time, rows tagged "repeat") and the summary gives each speed-up's median,
min and max over the repeats: the machine's load moves single measurements a lot. Scene: a synthetic affinity field (Voronoi regions,
affinity ~0.9 inside a region and ~0.05 across), two smooth CAMs plus background (3 channels).
Variants: sparse (wsss_core); dense (PSA's float32 algorithm as is: its squarings fill
with denormal numbers, which stall CPU matrix products); dense-flush (the same, entries
below 1e-30 zeroed after each squaring: the dense walk's best case on a CPU, the one the
speed-up target is judged against); sparse-torch on a GPU when there is one.
Prints a table and writes benchmarks/results/random_walk.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.dense_reference import dense_affinity_matrix, dense_random_walk  # noqa: E402
from wsss_core.psa.affinity import neighbour_offsets, pair_slices  # noqa: E402
from wsss_core.psa.random_walk import (  # noqa: E402
    RandomWalkConfig,
    cams_on_grid,
    grid_shape,
    propagate,
    random_walk,
    random_walk_torch,
    transition_matrix,
)

IMAGE_SHAPE = (375, 500)  # VOC's usual landscape image, H x W
TAGS = np.array([3, 12])
RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "random_walk.json"
DENORMAL_FLUSH = 1e-30  # "dense-flush": PSA's walk with tiny entries zeroed after each squaring


def synthetic_scene(stride: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(cams (2, H, W) in [0, 1], aff (34, h, w)) for IMAGE_SHAPE at the given stride."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SHAPE
    grid_h, grid_w = grid_shape(IMAGE_SHAPE, stride)
    seeds = rng.uniform([0, 0], [height, width], size=(8, 2))
    cy, cx = (np.arange(grid_h) + 0.5) * stride, (np.arange(grid_w) + 0.5) * stride
    centres = np.stack(np.meshgrid(cy, cx, indexing="ij"), axis=-1)
    regions = np.argmin(((centres[:, :, None, :] - seeds) ** 2).sum(-1), axis=-1)
    aff = np.zeros((len(neighbour_offsets(5)), grid_h, grid_w), dtype=np.float32)
    for k, (dy, dx) in enumerate(neighbour_offsets(5)):
        source, destination = pair_slices(int(dy), int(dx), grid_h, grid_w)
        same = regions[source] == regions[destination]
        aff[k][source] = np.where(same, rng.uniform(0.85, 1.0, same.shape), rng.uniform(0.0, 0.1, same.shape))
    yy, xx = np.mgrid[0:height, 0:width]
    cams = np.stack(
        [np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 40.0**2)) for y, x in seeds[:2]]
    ).astype(np.float32)
    return cams, aff


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_child(variant: str, stride: int, runs: int) -> dict:
    """Run one variant `runs` times in this (fresh) process and report times and memory."""
    config = RandomWalkConfig(stride=stride)
    cams, aff = synthetic_scene(stride)
    small = cams_on_grid(cams, aff.shape[1:], IMAGE_SHAPE, config)
    n_nodes = aff.shape[1] * aff.shape[2]

    last_walk: dict[str, np.ndarray] = {}

    def one_run() -> dict[str, float]:
        if variant.startswith("dense"):
            start = time.perf_counter()
            weights = dense_affinity_matrix(aff, config.beta, config.radius, dtype=np.float32)
            built = time.perf_counter()
            flush_below = DENORMAL_FLUSH if variant == "dense-flush" else 0.0
            walked = dense_random_walk(small, weights, config.log_t, flush_below)
            done = time.perf_counter()
            last_walk["walked"] = walked
            return {"build_s": built - start, "walk_s": done - built, "total_s": done - start}
        start = time.perf_counter()
        transition = transition_matrix(aff, config.beta, config.radius)
        built = time.perf_counter()
        if variant == "sparse-torch":
            walked = random_walk_torch(small, transition, config.steps, device="cuda")
        else:
            walked = random_walk(small, transition, config.steps)
        done = time.perf_counter()
        last_walk["walked"] = walked
        propagate_start = time.perf_counter()
        propagate(cams, aff, TAGS, config)
        return {
            "build_s": built - start,
            "walk_s": done - built,
            "total_s": time.perf_counter() - propagate_start,  # pool + build + walk + upsample + argmax
        }

    # The first run gives the memory figures (and counts as a timed run: tracemalloc costs
    # little here, the walks make few, large allocations).
    baseline_rss = peak_rss_mb()
    tracemalloc.start()
    timings = [one_run()]
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_delta = peak_rss_mb() - baseline_rss
    timings += [one_run() for _ in range(runs - 1)]
    result = {
        "variant": variant,
        "stride": stride,
        "grid": list(aff.shape[1:]),
        "nodes": n_nodes,
        "runs": len(timings),
        **{key: statistics.median(t[key] for t in timings) for key in timings[0]},
        "tracemalloc_peak_mb": traced_peak / 2**20,
        "rss_delta_mb": rss_delta,
        "dense_matrices_mb": 3 * n_nodes**2 * 4 / 2**20,  # W, T and T @ T alive together (float32)
    }
    if variant.startswith("dense"):
        sparse = random_walk(small, transition_matrix(aff, config.beta, config.radius), config.steps)
        result["max_rel_diff_vs_sparse"] = float(np.abs(sparse - last_walk["walked"]).max() / np.abs(last_walk["walked"]).max())
    return result


def run_in_subprocess(variant: str, stride: int, runs: int) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--stride", str(stride), "--runs", str(runs)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def estimate_dense(variant: str, stride: int, measured: dict | None) -> dict:
    """The dense walk not run: its memory (W, T and T @ T, float32) computed; time scaled as N^3.

    ``measured``: a dense row at another stride whose walk time is scaled by (N / N_measured)^3
    (each of the log_t squarings is an N x N x N product).
    """
    n_nodes = int(np.prod(grid_shape(IMAGE_SHAPE, stride)))
    row = {
        "variant": variant,
        "stride": stride,
        "grid": list(grid_shape(IMAGE_SHAPE, stride)),
        "nodes": n_nodes,
        "runs": 0,
        "dense_matrices_mb": 3 * n_nodes**2 * 4 / 2**20,
        "note": "not run (--dense-stride4 estimate): memory computed, time scaled from stride 8 as N^3",
    }
    if measured is not None and "walk_s" in measured:
        row["estimated_walk_s"] = measured["walk_s"] * (n_nodes / measured["nodes"]) ** 3
    return row


def print_table(rows: list[dict]) -> None:
    columns = ["variant", "stride", "nodes", "runs", "build_s", "walk_s", "total_s",
               "tracemalloc_peak_mb", "rss_delta_mb", "dense_matrices_mb", "estimated_walk_s"]
    print(" | ".join(f"{c:>14}" for c in columns))
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "-")
            cells.append(f"{value:>14.3f}" if isinstance(value, float) else f"{value!s:>14}")
        print(" | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dense-runs", type=int, default=3, help="runs of the dense walk at stride 8")
    parser.add_argument(
        "--dense-stride4", choices=["run", "estimate"], default="estimate",
        help="run PSA's dense walk at stride 4 too (~1.6 GB, tens of CPU-minutes) or only estimate it",
    )
    parser.add_argument("--child", choices=["sparse", "sparse-torch", "dense", "dense-flush"], help=argparse.SUPPRESS)
    parser.add_argument("--stride", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help="measure everything this many times")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_child(args.child, args.stride, args.runs)))
        return

    import torch

    jobs = [("sparse", 8, args.runs), ("sparse", 4, args.runs)]
    if torch.cuda.is_available():
        jobs += [("sparse-torch", 8, args.runs), ("sparse-torch", 4, args.runs)]
    jobs += [("dense", 8, args.dense_runs), ("dense-flush", 8, args.dense_runs), ("dense", 4, 1), ("dense-flush", 4, 1)]
    rows: list[dict] = []
    for repeat in range(args.repeats):
        done: list[dict] = []
        for variant, stride, runs in jobs:
            if stride == 4 and variant.startswith("dense") and args.dense_stride4 == "estimate":
                measured = next((r for r in done if r["variant"] == variant and r["stride"] == 8), None)
                done.append(estimate_dense(variant, 4, measured))
            else:
                load = list(os.getloadavg())
                done.append(run_in_subprocess(variant, stride, runs) | {"load_average_before": load})
            done[-1]["repeat"] = repeat
            print_table(done[-1:])
            write_report(rows + done, summarise_repeats(rows + done), args.out)  # partial results survive
        rows += done
    print()
    print_table(rows)
    print(json.dumps(summarise_repeats(rows), indent=2))
    print(f"wrote {args.out}")


def summarise_repeats(rows: list[dict]) -> dict:
    """summarise() of the last repeat, plus each speed-up's median, min and max over all repeats."""
    repeats = sorted({r.get("repeat", 0) for r in rows})
    per_repeat = [summarise([r for r in rows if r.get("repeat", 0) == k]) for k in repeats]
    summary = per_repeat[-1] | {"repeats": len(repeats)}
    for key in per_repeat[-1]:
        if "speedup" in key:
            values = [s[key] for s in per_repeat if key in s]
            summary[f"{key}_over_repeats"] = {
                "median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            }
    return summary


def summarise(rows: list[dict]) -> dict:
    """Speed-ups and the brief's targets, from whichever rows are there."""
    found = {(r["variant"], r["stride"]): r for r in rows}
    summary: dict = {}
    sparse4 = found.get(("sparse", 4))
    for (variant, stride), dense in found.items():
        sparse = found.get(("sparse", stride))
        if variant.startswith("dense") and sparse and "walk_s" in dense:
            summary[f"{variant}_walk_speedup_stride{stride}"] = dense["walk_s"] / sparse["walk_s"]
            build_and_walk = sparse["build_s"] + sparse["walk_s"]
            summary[f"{variant}_build_and_walk_speedup_stride{stride}"] = dense["total_s"] / build_and_walk
        if variant.startswith("dense") and sparse and "estimated_walk_s" in dense:
            summary[f"{variant}_estimated_walk_speedup_stride{stride}"] = dense["estimated_walk_s"] / sparse["walk_s"]
        if variant.startswith("dense"):
            summary[f"dense_matrices_mb_stride{stride}"] = dense["dense_matrices_mb"]
    if sparse4:
        summary["stride4_total_s"] = sparse4["total_s"]
        summary["stride4_peak_mb"] = max(sparse4["rss_delta_mb"], sparse4["tracemalloc_peak_mb"])
    targets = {}
    if "dense-flush_build_and_walk_speedup_stride8" in summary:  # the dense walk's best case
        targets["sparse >= 10x faster than dense at stride 8"] = (
            summary["dense-flush_build_and_walk_speedup_stride8"] >= 10
        )
    if sparse4:
        targets["stride 4 < 2 s per image"] = summary["stride4_total_s"] < 2
        targets["stride 4 < 300 MB per image"] = summary["stride4_peak_mb"] < 300
    summary["targets_met"] = targets
    return summary


def write_report(rows: list[dict], summary: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "image_shape": list(IMAGE_SHAPE),
        "channels": 3,
        "config": dataclasses.asdict(RandomWalkConfig()) | {"steps": RandomWalkConfig().steps},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "note": "load_average_before: other work on the machine slows every timing",
        "results": rows,
        "summary": summary,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
