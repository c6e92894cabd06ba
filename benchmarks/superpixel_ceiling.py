"""How good can GraphNet's pseudo masks be with these superpixels? The superpixel ceiling.

    .venv/bin/python benchmarks/superpixel_ceiling.py --workspace WS [--compactness 10 20 30 40]
        [--segments-per-100k 500] [--method slic|felzenszwalb]

Every superpixel takes the majority ground-truth class of its pixels (what a perfect node
labeller would give), the masks are painted back and scored against the ground truth
(mIoU over the images with GT). Whatever a GCN does, its masks cannot beat this, so it
tells a superpixel setting's boundary errors apart from the labeller's errors. This is
how the offline preset's SLIC compactness (30) was chosen on the standard dataset.
Prints a table and writes benchmarks/results/superpixel_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from wsss_core.graphnet.baselines import paint_nodes  # noqa: E402
from wsss_core.metrics import ConfusionMatrix  # noqa: E402
from wsss_core.graphnet.seeds import scribble_seeds  # noqa: E402
from wsss_core.store import Workspace  # noqa: E402
from wsss_core.graphnet.superpixels import SuperpixelConfig, compute_superpixels  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "superpixel_ceiling.json"


def superpixel_ceiling(ws: Workspace, image_ids: list[str], config: SuperpixelConfig) -> dict:
    """mIoU of majority-GT superpixel labels and the median superpixel count per image."""
    matrix = ConfusionMatrix(len(ws.classes))
    counts = []
    for image_id in image_ids:
        superpixels = compute_superpixels(ws.read_array("images", image_id), config)
        gt = ws.read_array("gt", image_id)
        n_nodes = int(superpixels.max()) + 1
        # the majority rule of scribble seeds, with the full GT as the "scribble" (255 ignored)
        majority = scribble_seeds(superpixels, gt, len(ws.classes), n_nodes).labels
        matrix.update(paint_nodes(superpixels, majority), gt)
        counts.append(n_nodes)
    return {"miou": matrix.miou(), "superpixels_per_image": statistics.median(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, type=Path, help="an ingested workspace with GT")
    parser.add_argument("--method", default="slic", choices=("slic", "felzenszwalb"))
    parser.add_argument("--segments-per-100k", type=float, nargs="+", default=[500.0])
    parser.add_argument("--compactness", type=float, nargs="+", default=[10.0, 20.0, 30.0, 40.0])
    args = parser.parse_args()
    ws = Workspace(args.workspace).require()
    image_ids = [i for i in ws.image_ids() if ws.has_array("gt", i)]
    if not image_ids:
        sys.exit(f"{args.workspace}: no image has ground truth to score superpixels against")
    rows = []
    print(f"{len(image_ids)} images with GT in {args.workspace}")
    print(f"{'segments/100k':>13} {'compactness':>11} {'superpixels':>11} {'ceiling mIoU':>12}")
    for segments in args.segments_per_100k:
        for compactness in args.compactness:
            config = SuperpixelConfig(
                method=args.method, segments_per_100k_pixels=segments, compactness=compactness
            )
            result = superpixel_ceiling(ws, image_ids, config)
            rows.append({"config": asdict(config), **result})
            print(f"{segments:13.0f} {compactness:11.0f} {result['superpixels_per_image']:11.0f} "
                  f"{100 * result['miou']:12.1f}", flush=True)
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    payload = {"workspace": str(args.workspace), "images": len(image_ids), "rows": rows}
    RESULTS_PATH.write_text(json.dumps(payload, indent=2))
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
