"""The random walk's post-processing values against ground truth, on a workspace whose
AffinityNet path has run (trained CAM classifier and AffinityNet, cams, affinity-labels).

    .venv/bin/python benchmarks/walk_params.py --workspace WS --name NAME [--split train] [--images N]

For every image of the split: AffinityNet's affinities once, then the walk for each beta in
--betas, read after 2^log_t steps for each log_t in --log-ts, with each background power in
--powers (the background channel (1 - max CAM)^power walks with the CAMs). Each setting's
masks are scored against GT (mIoU over the dataset, void ignored) and, as gain, against
pseudo/cam at the workspace's stored CAMs with the small preset's background score (0.45).
Two readings of every walk are scored:
  walk  -- argmax of the walked scores (PSA; pseudo/rw)
  band  -- pixels the confident affinity labels settle keep them; the walk decides the
           neutral rest (RwMaskConfig.keep_confident)
and, as references, pseudo/cam at several background scores and the confident labels alone
(neutral read as background). Writes benchmarks/results/walk_params-NAME.json and prints the
settings ranked by gain.

Two label-free criteria are scored for every walk too, to see whether a dataset's walk could be
chosen without ground truth (they are mIoU against the confident affinity labels, neutral
ignored; `--summary` shows the setting each would pick and its gain):
  agreement -- the walk's masks against the confident labels;
  held-out  -- the CAMs of a checkerboard of 4x4-cell blocks are hidden, the walk fills them
               from the other blocks (two complementary walks), and only the hidden blocks
               are compared with the confident labels. The small preset's walk was chosen with this script over four
datasets (`--summary A.json B.json ...` ranks settings by their worst gain across them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from wsss_core.metrics import ConfusionMatrix  # noqa: E402
from wsss_core.psa.affinity import downsample_scores  # noqa: E402
from wsss_core.psa.affinitynet import load_affinitynet, predict_affinities  # noqa: E402
from wsss_core.psa.masks import keep_confident_labels, labels_of_channels  # noqa: E402
from wsss_core.psa.random_walk import transition_matrix  # noqa: E402
from wsss_core.store import AFFINITYNET_CHECKPOINT, Workspace  # noqa: E402

CAM_SCORES = (0.2, 0.3, 0.45, 0.6)
HELD_OUT_BLOCK = 4  # grid cells per side of a hidden block
REFERENCE_CAM_SCORE = 0.45  # the small preset's pseudo/cam


def miou(confusion: ConfusionMatrix) -> float:
    return confusion.miou() * 100


def add(table: dict, key: object, n_classes: int, gt: np.ndarray, pred: np.ndarray) -> None:
    table.setdefault(key, ConfusionMatrix(n_classes)).update(pred, gt)


def held_out_cells(grid_h: int, grid_w: int, block: int = HELD_OUT_BLOCK) -> np.ndarray:
    """(grid_h * grid_w,) bool: a checkerboard of block x block cells (True: hidden in the first walk)."""
    rows, cols = np.mgrid[:grid_h, :grid_w]
    return ((rows // block + cols // block) % 2 == 0).ravel()


def walk_readings(
    cams: np.ndarray, aff: np.ndarray, betas: list[float], log_ts: list[int], powers: list[float],
    image_shape: tuple[int, int], held_out: bool = False,
):
    """Yield (beta, log_t, power, (K+1, H, W) walked scores) for every setting; one walk per beta
    carries every power's background channel and is read at each log_t. held_out: the scores
    are those of the held-out criterion instead (each cell read from the walk that hid it)."""
    height, width = image_shape
    grid_h, grid_w = aff.shape[1:]
    backgrounds = np.stack([np.power(1.0 - cams.max(axis=0), p) for p in powers])
    channels = np.concatenate([downsample_scores(backgrounds, 8), downsample_scores(cams, 8)])
    start = np.ascontiguousarray(channels.reshape(len(channels), -1).T, dtype=np.float32)
    hidden = held_out_cells(grid_h, grid_w)[:, None]
    # held out: the first walk starts without the hidden cells, the second without the rest
    starts = [start * ~hidden, start * hidden] if held_out else [start]
    for beta in betas:
        transition = transition_matrix(aff, beta)
        walks, steps = [s.copy() for s in starts], 0
        for log_t in sorted(log_ts):
            while steps < 2**log_t:
                walks, steps = [transition @ w for w in walks], steps + 1
            scores = np.where(hidden, walks[0], walks[1]) if held_out else walks[0]
            grid = torch.from_numpy(np.ascontiguousarray(scores.T).reshape(-1, grid_h, grid_w))[None]
            up = F.interpolate(grid, size=(grid_h * 8, grid_w * 8), mode="bilinear", align_corners=False)[0]
            up = up[:, :height, :width].numpy()
            for index, power in enumerate(powers):
                yield beta, log_t, power, np.concatenate([up[index : index + 1], up[len(powers) :]])


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    ws = Workspace(args.workspace).require()
    n_classes = len(ws.classes)
    ids = ws.split_ids(args.split)[: args.images]
    network = load_affinitynet(ws.path / AFFINITYNET_CHECKPOINT)
    walk: dict = {}
    band: dict = {}
    agreement: dict = {}
    held_out: dict = {}
    cam: dict = {}
    confident_only = ConfusionMatrix(n_classes)
    started = time.perf_counter()
    for number, image_id in enumerate(ids, start=1):
        image, gt = ws.read_array("images", image_id), ws.read_array("gt", image_id)
        cams = np.clip(ws.read_array("cams", image_id, "scores").astype(np.float32), 0.0, 1.0)
        classes = ws.read_array("cams", image_id, "classes")
        confident = ws.read_array("affinity-labels", image_id)
        if len(classes) == 0:
            continue
        labels = labels_of_channels(classes)
        for score in CAM_SCORES:
            scores = np.concatenate([np.full((1, *gt.shape), score, dtype=np.float32), cams])
            add(cam, score, n_classes, gt, labels[np.argmax(scores, 0)])
        confident_only.update(np.where(confident == 255, 0, confident), gt)
        aff = predict_affinities(network, image, "cpu", stride=8)
        for beta, log_t, power, scores in walk_readings(cams, aff, args.betas, args.log_ts, args.powers, gt.shape):
            key = (beta, log_t, power)
            add(walk, key, n_classes, gt, labels[np.argmax(scores, 0)])
            add(band, key, n_classes, gt, labels[np.argmax(keep_confident_labels(scores, classes, confident), 0)])
            add(agreement, key, n_classes, confident, labels[np.argmax(scores, 0)])
        for beta, log_t, power, scores in walk_readings(
            cams, aff, args.betas, args.log_ts, args.powers, gt.shape, held_out=True
        ):
            # every cell is read from the walk that did not start from it
            add(held_out, (beta, log_t, power), n_classes, confident, labels[np.argmax(scores, 0)])
        if number % 20 == 0 or number == len(ids):
            print(f"{number}/{len(ids)} images, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    reference = miou(cam[REFERENCE_CAM_SCORE])
    settings = [
        {"beta": k[0], "log_t": k[1], "power": k[2], "walk": miou(walk[k]), "band": miou(band[k]),
         "walk_gain": miou(walk[k]) - reference, "band_gain": miou(band[k]) - reference,
         "agreement": miou(agreement[k]), "held_out": miou(held_out[k])}
        for k in walk
    ]
    return {
        "workspace": str(ws.path), "dataset": ws.dataset.get("name"),
        "split": args.split, "images": len(ids),
        "cam": {str(s): miou(c) for s, c in cam.items()}, "cam_reference_score": REFERENCE_CAM_SCORE,
        "confident_labels_neutral_as_background": miou(confident_only), "settings": settings,
    }


def summarise(paths: list[Path]) -> None:
    """Rank settings by their worst gain over pseudo/cam across several results files."""
    results = [json.loads(p.read_text()) for p in paths]
    for reading in ("walk", "band"):
        gains: dict[tuple, list[float]] = {}
        for result in results:
            for s in result["settings"]:
                gains.setdefault((s["beta"], s["log_t"], s["power"]), []).append(s[f"{reading}_gain"])
        complete = {k: v for k, v in gains.items() if len(v) == len(results)}
        ranked = sorted(complete.items(), key=lambda kv: -min(kv[1]))[:10]
        print(f"{reading}: best worst-case gain over pseudo/cam across {', '.join(p.stem for p in paths)}")
        for (beta, log_t, power), values in ranked:
            print(f"  beta {beta:g} steps 2^{log_t} power {power:g}: " + " / ".join(f"{v:+.1f}" for v in values)
                  + f"  (mean {np.mean(values):+.1f})")
    label_free_picks(results, [p.stem for p in paths])


def label_free_picks(results: list[dict], names: list[str]) -> None:
    """Per dataset: the walk each label-free criterion picks, its gain over pseudo/cam, and the best gain."""
    for name, result in zip(names, results):
        scored = [s for s in result["settings"] if "held_out" in s]
        if not scored:
            continue
        best = max(scored, key=lambda s: s["walk_gain"])
        line = [f"{name}: best {best['walk_gain']:+.1f} (beta {best['beta']:g} 2^{best['log_t']} power {best['power']:g})"]
        for criterion in ("agreement", "held_out"):
            pick = max(scored, key=lambda s: s[criterion])
            line.append(f"{criterion} picks beta {pick['beta']:g} 2^{pick['log_t']} power {pick['power']:g}: "
                        f"{pick['walk_gain']:+.1f}")
        print("; ".join(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace")
    parser.add_argument("--name", help="results file suffix: benchmarks/results/walk_params-NAME.json")
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=None, help="first N images of the split (default all)")
    parser.add_argument("--betas", type=float, nargs="+", default=[4, 8, 12, 16, 24])
    parser.add_argument("--log-ts", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8])
    parser.add_argument("--powers", type=float, nargs="+", default=[1, 2, 3, 4, 6, 8, 16])
    parser.add_argument("--summary", type=Path, nargs="+", help="rank settings across these results files instead")
    args = parser.parse_args()
    if args.summary:
        summarise(args.summary)
        return
    if not args.workspace or not args.name:
        parser.error("--workspace and --name are required (or --summary FILES)")
    result = measure(args)
    out = REPO_ROOT / "benchmarks" / "results" / f"walk_params-{args.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"pseudo/cam: {json.dumps({k: round(v, 1) for k, v in result['cam'].items()})}; "
          f"confident labels alone: {result['confident_labels_neutral_as_background']:.1f}")
    for reading in ("walk", "band"):
        best = sorted(result["settings"], key=lambda s: -s[reading])[:5]
        for s in best:
            print(f"{reading}: beta {s['beta']:g} steps 2^{s['log_t']} power {s['power']:g}: {s[reading]:.1f} ({s[reading + '_gain']:+.1f})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
