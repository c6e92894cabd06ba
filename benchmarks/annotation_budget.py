"""The annotation budget: what reviewing K images buys, least-confident first against at random.

    .venv/bin/python benchmarks/annotation_budget.py --seed S [--images 80] [--fractions 0.05 0.10 0.20]
        [--draws 3] [--paths scribbles tags] [--data /tmp/wsss-budget]

On `wsss generate --variant wild --seed S` (S: a seed nobody tuned on; record it), per path:

1. a clean run, `wsss run --path graphnet-<supervision> --rounds 0 --no-evaluate --no-mlflow
   --root DATA` (train and val ingested), and the mIoU of its masks over every image;
2. for each K (a fraction of the images) and each way of choosing (the K least-confident
   images of the mask set, in the order `wsss status --worst` lists them; or K random ones,
   --draws draws), on a fresh copy of the dataset and the finished workspace at the same
   paths: a simulated reviewer corrects the chosen images, and the same command runs again
   (the re-run: ingest notices the changed scribble files, and only what they feed recomputes);
3. the mIoU over every image after the re-run, and the re-run's wall time.

The simulated reviewer (`corrective_strokes`) looks at an image's current mask beside its GT:
every connected region the mask labels wrongly, larger than `--min-superpixels` superpixels of
the image's mean size, gets one stroke of the GT's class along the region's skeleton (its
medial line), added to the image's scribble file (scribbles/<id>.png) as a person's stroke
would be. Scribbles: GraphNet from scribbles (gcn-scribbles). Tags: a tags-only copy of the
dataset (its scribbles/ removed), GraphNet seeded by the CAMs (gcn-tags) with
`graphnet.overrides.tag_seeds.scribbles=true`, so that a scribble, where an image has one,
seeds its nodes over the CAM's (TagSeedConfig.scribbles).

Settings: the GraphNet offline preset, the AffinityNet small preset (CAM training as the
preset has it); against one long-lived Prefect server (as a scheduled run has). Prints a table
and writes benchmarks/results/annotation_budget-wild-<S>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.scale import LongLivedServer  # noqa: E402

WSSS = [sys.executable, "-m", "cli"]
ENV: dict[str, str] = dict(os.environ)
IGNORE = 255
PATHS = {
    "scribbles": ("graphnet-scribbles", "pseudo/gcn-scribbles", ()),
    "tags": ("graphnet-tags", "pseudo/gcn-tags", ("--set", "graphnet.overrides.tag_seeds.scribbles=true")),
}
SETTINGS = ("--set", "graphnet.preset=offline", "--set", "affinitynet.preset=small")


def corrective_strokes(mask: np.ndarray, gt: np.ndarray, min_area: int) -> tuple[np.ndarray, int]:
    """A reviewer's strokes on one image: HxW uint8, 255 where none, the GT's class along the
    skeleton of every connected region (8-connected) of one GT class that the mask labels
    otherwise and that is larger than min_area pixels; and how many strokes."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    strokes = np.full(gt.shape, IGNORE, np.uint8)
    count = 0
    for label in np.unique(gt):
        if label == IGNORE:
            continue
        regions, n = ndimage.label((gt == label) & (mask != label), structure=np.ones((3, 3)))
        sizes = np.bincount(regions.ravel(), minlength=n + 1)
        for region in np.nonzero(sizes > min_area)[0]:
            if region == 0:
                continue
            inside = regions == region
            line = skeletonize(inside)
            if not line.any():  # a region too thin for a skeleton: its own pixels are the line
                line = inside
            strokes[line] = label
            count += 1
    return strokes, count


def review(root: Path, workspace: Path, mask_set: str, ids: list[str], min_superpixels: float) -> int:
    """The simulated reviewer's strokes on these images, added to their scribble files; the number of strokes."""
    from wsss_core.data.image_io import save_palette_png
    from wsss_core.store import Workspace

    ws = Workspace(workspace)
    total = 0
    for image_id in ids:
        mask, gt = ws.read_array(mask_set, image_id), ws.read_array("gt", image_id)
        superpixels = ws.read_array("superpixels", image_id)
        min_area = int(min_superpixels * gt.size / (int(superpixels.max()) + 1))
        strokes, count = corrective_strokes(mask, gt, min_area)
        if not count:
            continue
        path = root / "scribbles" / f"{image_id}.png"
        scribble = np.array(Image.open(path)) if path.exists() else np.full(gt.shape, IGNORE, np.uint8)
        scribble = np.where(strokes != IGNORE, strokes, scribble).astype(np.uint8)
        path.parent.mkdir(exist_ok=True)
        save_palette_png(path, scribble)
        total += count
    return total


def dataset_miou(workspace: Path, mask_set: str) -> tuple[float, int]:
    """mIoU (%) of a mask set over every image of the dataset, and how many images have a mask."""
    from wsss_core.metrics import ConfusionMatrix
    from wsss_core.store import Workspace

    ws = Workspace(workspace)
    matrix = ConfusionMatrix(len(ws.classes))
    done = ws.done_ids(mask_set)
    ids = [i for i in ws.image_ids() if i in done]
    for image_id in ids:
        matrix.update(ws.read_array(mask_set, image_id), ws.read_array("gt", image_id))
    return round(100 * matrix.miou(), 2), len(ids)


def wsss_run(root: Path, workspace: Path, path: str, extra: tuple[str, ...]) -> tuple[float, str]:
    args = ["run", "--path", path, "--rounds", "0", "--no-evaluate", "--no-mlflow",
            "--root", str(root), "--ingest-split", "train", "--ingest-split", "val", *SETTINGS, *extra,
            "--workspace", str(workspace)]
    started = time.perf_counter()
    result = subprocess.run([*WSSS, *args], cwd=REPO_ROOT, capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"wsss {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return round(elapsed, 2), result.stderr + result.stdout


def computed_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if " computed" in line and "images" in line]


def measure_path(args: argparse.Namespace, pristine: Path, supervision: str) -> dict[str, Any]:
    from wsss_core.review.export import select_images
    from wsss_core.store import Workspace

    path, mask_set, extra = PATHS[supervision]
    base = args.data / supervision
    shutil.rmtree(base, ignore_errors=True)
    # every run reads the dataset at one path (a workspace is bound to its dataset's root): the
    # clean run's dataset and workspace are kept aside and laid back before each review
    root, ws = base / "data", base / "ws"
    clean_root, clean_ws = base / "pristine-data", base / "pristine-ws"
    shutil.copytree(pristine, root)
    if supervision == "tags":  # a tags-only dataset: no scribbles until a reviewer draws one
        shutil.rmtree(root / "scribbles")
    wall_s, output = wsss_run(root, ws, path, extra)
    before, n_images = dataset_miou(ws, mask_set)
    print(f"{supervision}: clean run {wall_s:.0f} s, {mask_set} {before:.2f} mIoU on {n_images} images", flush=True)
    shutil.copytree(root, clean_root)  # copytree keeps mtimes: unchanged files stay unchanged
    shutil.copytree(ws, clean_ws)
    ids = Workspace(clean_ws).image_ids()
    rows = []
    for fraction in args.fractions:
        k = max(1, round(fraction * len(ids)))
        choices = {"least-confident": select_images(Workspace(clean_ws), mask_set, worst_n=k)[0]}
        for draw in range(args.draws):
            choices[f"random-{draw}"] = random.Random(f"{args.seed}-{fraction}-{draw}").sample(ids, k)
        for how, chosen in choices.items():
            for target in (root, ws):
                shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(clean_root, root)
            shutil.copytree(clean_ws, ws)
            strokes = review(root, ws, mask_set, chosen, args.min_superpixels)
            rerun_s, output = wsss_run(root, ws, path, extra)
            after, _ = dataset_miou(ws, mask_set)
            row = {"fraction": fraction, "k": k, "choice": how, "images": chosen, "strokes": strokes,
                   "miou": after, "gain": round(after - before, 2), "rerun_s": rerun_s, "computed": computed_lines(output)}
            rows.append(row)
            print(f"{supervision} K={k} ({fraction:.0%}) {how}: {strokes} strokes, {after:.2f} mIoU "
                  f"({after - before:+.2f}), re-run {rerun_s:.0f} s", flush=True)
    for target in (root, ws):
        shutil.rmtree(target, ignore_errors=True)
    return {"path": path, "mask_set": mask_set, "clean_run_s": wall_s, "images": n_images, "miou_before": before, "runs": rows}


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per K: the least-confident review's gain, the median random gain (and its draws), the ratio."""
    table = []
    for fraction in sorted({r["fraction"] for r in result["runs"]}):
        runs = [r for r in result["runs"] if r["fraction"] == fraction]
        ranked = next(r for r in runs if r["choice"] == "least-confident")
        randoms = [r for r in runs if r["choice"].startswith("random")]
        random_gain = statistics.median(r["gain"] for r in randoms) if randoms else None
        table.append({
            "fraction": fraction, "k": ranked["k"],
            "least_confident": {"miou": ranked["miou"], "gain": ranked["gain"], "rerun_s": ranked["rerun_s"]},
            "random": {"miou": statistics.median(r["miou"] for r in randoms) if randoms else None,
                       "gain": random_gain, "gains": [r["gain"] for r in randoms],
                       "rerun_s": statistics.median(r["rerun_s"] for r in randoms) if randoms else None},
            "ratio": round(ranked["gain"] / random_gain, 2) if random_gain else None,
        })
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True, help="the wild variant's seed: one nobody tuned on")
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.10, 0.20])
    parser.add_argument("--draws", type=int, default=3, help="random reviews per K (the median is reported)")
    parser.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["scribbles", "tags"])
    parser.add_argument("--min-superpixels", type=float, default=3.0,
                        help="a wrong region gets a stroke when larger than this many mean-sized superpixels")
    parser.add_argument("--data", type=Path, default=Path("/tmp/wsss-budget"))
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/annotation_budget-wild-<seed>.json")
    args = parser.parse_args()
    from wsss_core.data.wild import generate_variant

    args.data.mkdir(parents=True, exist_ok=True)
    pristine = args.data / "generated"
    shutil.rmtree(pristine, ignore_errors=True)
    generate_variant(pristine, "wild", args.images, 256, 192, args.seed)  # `wsss generate --variant wild`
    (args.data / "prefect").mkdir(exist_ok=True)
    server = LongLivedServer(args.data / "prefect", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
    ENV["PREFECT_API_URL"] = server.url
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": "benchmarks/annotation_budget.py " + " ".join(sys.argv[1:]), "seed": args.seed, "variant": "wild",
        "images": args.images, "min_superpixels": args.min_superpixels, "settings": list(SETTINGS),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "paths": {},
    }
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"annotation_budget-wild-{args.seed}.json"
    try:
        for supervision in args.paths:
            result = measure_path(args, pristine, supervision)
            result["summary"] = summary(result)
            results["paths"][supervision] = result
            results["total_s"] = round(time.perf_counter() - started, 1)
            out.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        server.stop()
    print(f"\n{'path':10} {'K':>4} {'before':>7} {'ranked':>8} {'gain':>6} {'random':>8} {'gain':>6} {'ratio':>6} {'re-run s':>12}")
    for supervision, result in results["paths"].items():
        for row in result["summary"]:
            ranked, rand = row["least_confident"], row["random"]
            print(f"{supervision:10} {row['k']:>4} {result['miou_before']:>7.2f} {ranked['miou']:>8.2f} {ranked['gain']:>+6.2f} "
                  f"{rand['miou'] or 0:>8.2f} {rand['gain'] or 0:>+6.2f} {row['ratio'] or float('nan'):>6.2f} "
                  f"{ranked['rerun_s']:>5.0f} / {rand['rerun_s'] or 0:>4.0f}")
    print(f"total {results['total_s']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
