"""Sparse random walk (wsss_core.random_walk) vs PSA's dense N x N walk on a 500x375 image.

    .venv/bin/python benchmarks/random_walk.py [--runs 5] [--dense-stride4 run|estimate]

Each (variant, stride) runs in a fresh subprocess, so its peak memory is its own:
rss_delta_mb is the rise of the process's peak RSS (ru_maxrss) over its peak before the
first walk; tracemalloc_peak_mb is the peak of numpy/scipy allocations during one walk.
Times are medians over --runs runs. Scene: a synthetic affinity field (Voronoi regions,
affinity ~0.9 inside a region and ~0.05 across), two smooth CAMs plus background (3 channels).
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
from wsss_core.affinity import neighbour_offsets, pair_slices  # noqa: E402
from wsss_core.random_walk import (  # noqa: E402
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
        if variant == "dense":
            start = time.perf_counter()
            weights = dense_affinity_matrix(aff, config.beta, config.radius, dtype=np.float32)
            built = time.perf_counter()
            walked = dense_random_walk(small, weights, config.log_t)
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

    baseline_rss = peak_rss_mb()
    timings = [one_run()]
    rss_delta = peak_rss_mb() - baseline_rss
    tracemalloc.start()
    one_run()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
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
    if variant == "dense":
        sparse = random_walk(small, transition_matrix(aff, config.beta, config.radius), config.steps)
        result["max_rel_diff_vs_sparse"] = float(np.abs(sparse - last_walk["walked"]).max() / np.abs(last_walk["walked"]).max())
    return result


def run_in_subprocess(variant: str, stride: int, runs: int) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--stride", str(stride), "--runs", str(runs)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def estimate_dense(stride: int) -> dict:
    n_nodes = int(np.prod(grid_shape(IMAGE_SHAPE, stride)))
    return {
        "variant": "dense",
        "stride": stride,
        "grid": list(grid_shape(IMAGE_SHAPE, stride)),
        "nodes": n_nodes,
        "runs": 0,
        "dense_matrices_mb": 3 * n_nodes**2 * 4 / 2**20,
        "note": "not run (--dense-stride4 estimate): memory computed",
    }


def print_table(rows: list[dict]) -> None:
    columns = ["variant", "stride", "nodes", "runs", "build_s", "walk_s", "total_s",
               "tracemalloc_peak_mb", "rss_delta_mb", "dense_matrices_mb"]
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
    parser.add_argument("--dense-stride4", choices=["run", "estimate"], default="run")
    parser.add_argument("--child", choices=["sparse", "sparse-torch", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--stride", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_child(args.child, args.stride, args.runs)))
        return

    import torch

    rows = [run_in_subprocess("sparse", 8, args.runs), run_in_subprocess("sparse", 4, args.runs)]
    if torch.cuda.is_available():
        rows += [run_in_subprocess("sparse-torch", stride, args.runs) for stride in (8, 4)]
    rows.append(run_in_subprocess("dense", 8, args.dense_runs))
    rows.append(run_in_subprocess("dense", 4, 1) if args.dense_stride4 == "run" else estimate_dense(4))
    print_table(rows)

    def find(variant: str, stride: int) -> dict:
        return next(r for r in rows if r["variant"] == variant and r["stride"] == stride)

    sparse8, sparse4, dense8 = find("sparse", 8), find("sparse", 4), find("dense", 8)
    summary = {
        "walk_speedup_stride8": dense8["walk_s"] / sparse8["walk_s"],
        "total_speedup_stride8": dense8["total_s"] / sparse8["total_s"],
        "stride4_total_s": sparse4["total_s"],
        "stride4_peak_mb": max(sparse4["rss_delta_mb"], sparse4["tracemalloc_peak_mb"]),
    }
    if "walk_s" in find("dense", 4):
        summary["walk_speedup_stride4"] = find("dense", 4)["walk_s"] / sparse4["walk_s"]
    summary["targets_met"] = {
        "sparse >= 10x faster than dense at stride 8": summary["total_speedup_stride8"] >= 10,
        "stride 4 < 2 s per image": summary["stride4_total_s"] < 2,
        "stride 4 < 300 MB per image": summary["stride4_peak_mb"] < 300,
    }
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "image_shape": list(IMAGE_SHAPE),
        "channels": 3,
        "config": dataclasses.asdict(RandomWalkConfig()) | {"steps": RandomWalkConfig().steps},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1_5_15_min": list(os.getloadavg()),  # other work on the machine slows all timings
        },
        "results": rows,
        "summary": summary,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
