"""Does a pseudo mask's confidence rank images as their true quality does?

    .venv/bin/python benchmarks/confidence.py [--images 200] [--variant standard|holdout] [--paths graphnet affinitynet]

Generates the built-in dataset, runs the real pipeline (GraphNet offline preset on
scribbles and boxes, with CRF; optionally the AffinityNet small preset) in a temporary
workspace, then per mask set compares each image's stored confidence with its true IoU:

    true IoU of an image  mean IoU over the classes present in that image's GT or mask
                          (void pixels ignored): ConfusionMatrix of the one image, miou()
    spearman              scipy.stats.spearmanr(confidence, IoU) over the images, per measure
    worst-10 IoU          median IoU of the 10 lowest-confidence images, beside the median of all

Prints a table and writes benchmarks/results/confidence.json (one entry per variant and paths).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scipy.stats import spearmanr  # noqa: E402

import flows  # noqa: E402,F401  (Prefect defaults before Prefect loads)
from flows.common import Execution, flow_result  # noqa: E402
from flows.graphnet import graphnet_flow  # noqa: E402
from flows.ingest import ingest_flow  # noqa: E402
from wsss_core.confidence import MEASURES, read_confidence, worst  # noqa: E402
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402
from wsss_core.metrics import ConfusionMatrix  # noqa: E402
from wsss_core.requests import AffinityNetRequest, GraphNetRequest  # noqa: E402
from wsss_core.store import Workspace  # noqa: E402

WORST_N = 10


def image_iou(ws: Workspace, stage: str, image_id: str) -> float:
    """Mean IoU over the classes in this image's GT or mask (one image's confusion matrix)."""
    return ConfusionMatrix(len(ws.classes)).update(ws.read_array(stage, image_id), ws.read_array("gt", image_id)).miou()


def measure(ws: Workspace, stage: str) -> dict:
    ids = sorted(ws.done_ids(stage))
    iou = {i: image_iou(ws, stage, i) for i in ids}
    result: dict = {"images": len(ids), "median_iou": statistics.median(iou.values())}
    for name in MEASURES:
        scores = read_confidence(ws, stage, name)
        scored = [i for i in ids if scores.get(i) is not None and iou[i] == iou[i]]  # nan IoU: no class at all
        rho = spearmanr([scores[i] for i in scored], [iou[i] for i in scored]).statistic if len(scored) > 2 else None
        lowest = [i for i, _ in worst({i: scores[i] for i in scored}, WORST_N)]
        result[name] = {
            "scored": len(scored),
            "spearman": None if rho is None else float(rho),
            "median_confidence": statistics.median(scores[i] for i in scored) if scored else None,
            "worst_median_iou": statistics.median(iou[i] for i in lowest) if lowest else None,
        }
    return result


def run_paths(workspace: str, paths: list[str], quiet: Execution) -> list[str]:
    stages: list[str] = []
    if "graphnet" in paths:
        for supervision in ("scribbles", "boxes"):
            run = flow_result(
                graphnet_flow, workspace=workspace, execution=quiet, request=GraphNetRequest(
                    supervision=supervision, preset="offline", crf=True, evaluate=False, log_to_mlflow=False,
                ),
            )
            stages += run.mask_stages
    if "affinitynet" in paths:
        from flows.affinitynet import affinitynet_flow

        run = flow_result(
            affinitynet_flow, workspace=workspace, execution=quiet,
            request=AffinityNetRequest(preset="small", crf=True, evaluate=False, log_to_mlflow=False),
        )
        stages += run.mask_stages
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--variant", default="standard", choices=("standard", "holdout"))
    parser.add_argument("--paths", nargs="+", default=["graphnet"], choices=("graphnet", "affinitynet"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "data", SyntheticConfig(n_images=args.images, seed=args.seed, variant=args.variant))
        workspace = str(Path(tmp) / "ws")
        quiet = Execution(progress=False)
        flow_result(ingest_flow, root=str(root), workspace=workspace, execution=quiet)
        for stage in run_paths(workspace, args.paths, quiet):
            results[stage] = measure(Workspace(workspace), stage)
    print(f"confidence vs per-image IoU, {args.variant} variant, {args.images} images (Spearman rho; IoU in %):")
    print(f"{'mask set':<28}{'images':>7}{'median IoU':>11}" + "".join(f"{'rho ' + m:>22}" for m in MEASURES)
          + f"{'worst-' + str(WORST_N) + ' IoU (margin)':>24}")
    for stage, r in results.items():
        rhos = "".join(f"{'-' if r[m]['spearman'] is None else format(r[m]['spearman'], '.2f'):>22}" for m in MEASURES)
        low = r["margin"]["worst_median_iou"]
        print(f"{stage:<28}{r['images']:>7}{100 * r['median_iou']:>11.1f}{rhos}{'-' if low is None else format(100 * low, '.1f'):>24}")
    out = REPO_ROOT / "benchmarks" / "results" / "confidence.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(out.read_text()) if out.exists() else {}  # one entry per variant and paths
    saved[f"{args.variant}:{'+'.join(args.paths)}"] = {
        "args": vars(args), "machine": platform.processor() or platform.machine(),
        "seconds": time.perf_counter() - started, "results": results,
    }
    out.write_text(json.dumps(saved, indent=1))
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
