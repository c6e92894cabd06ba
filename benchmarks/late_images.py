"""How good are the masks of images that join after the shared GCN was fitted (retried, or a grown dataset)?

    .venv/bin/python benchmarks/late_images.py [--images 100] [--variant standard] [--late 0.08] [--repeats 3]

The offline GraphNet preset fits one shared GCN on the seeds of every image and applies it
to each image as it is (per-image epochs 0): an image in the fit set has had its own seeds
learned. An image that joins later has not. This measures, on the train split of a
generated dataset, the mIoU of `--late` of the images (drawn --repeats times) when:

    clean      the GCN was fitted with them: what a clean run gives them, and what the
               pipeline gives a late image (gcn_fit fits the shared GCN again on every
               image, for the late ones only; the others keep theirs)
    served     the GCN was fitted without them and applied as it is
    adapt-E    the GCN was fitted without them, then fine-tuned per image on the image's
               own seeds for E epochs at the fitting learning rate (the per-image
               adaptation alternative)

Runs the real pipeline up to the seeds (ingest, superpixels, graphs, seeds) in a temporary
workspace, then the wsss_core GCN functions. Prints a table and writes
benchmarks/results/late_images-<variant>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import flows  # noqa: E402,F401  (Prefect defaults before Prefect loads)
from flows.common import Execution, flow_result  # noqa: E402
from flows.graphnet import graphnet_flow  # noqa: E402
from flows.ingest import ingest_flow  # noqa: E402
from tasks.graphnet import load_graph_input  # noqa: E402
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402
from wsss_core.graphnet.config import GraphNetConfig  # noqa: E402
from wsss_core.graphnet.masks import node_mask  # noqa: E402
from wsss_core.graphnet.gcn import GCNConfig, GCNWeights, pretrain_gcn, propagate_gcn  # noqa: E402
from wsss_core.metrics import ConfusionMatrix  # noqa: E402
from wsss_core.requests import GraphNetRequest  # noqa: E402
from wsss_core.store import Workspace  # noqa: E402

ADAPT_EPOCHS = (10, 25, 50, 100)


def late_miou(ws: Workspace, ids: list[str], items: dict, config: GCNConfig, init: GCNWeights) -> float:
    predictions = propagate_gcn([items[i] for i in ids], config, "cpu", init=init)
    matrix = ConfusionMatrix(len(ws.classes))
    for image_id, probabilities in zip(ids, predictions, strict=True):
        matrix.update(node_mask(ws.read_array("superpixels", image_id), probabilities), ws.read_array("gt", image_id))
    return matrix.miou()


def measure(ws: Workspace, supervision: str, late_fraction: float, repeats: int, seed: int) -> dict:
    ids = sorted(ws.done_ids(f"seeds/{supervision}"))
    items = {i: load_graph_input(ws, "graphs", f"seeds/{supervision}", i) for i in ids}
    config = GraphNetConfig.offline().gcn
    fit_all = pretrain_gcn([items[i] for i in ids], config)
    apply_only = replace(config, epochs=0)
    rows: dict[str, list[float]] = {"clean": [], "served": [], **{f"adapt-{e}": [] for e in ADAPT_EPOCHS}}
    generator = random.Random(seed)
    for _ in range(repeats):
        late = sorted(generator.sample(ids, max(1, round(late_fraction * len(ids)))))
        fit_without = pretrain_gcn([items[i] for i in ids if i not in late], config)
        rows["clean"].append(late_miou(ws, late, items, apply_only, fit_all))
        rows["served"].append(late_miou(ws, late, items, apply_only, fit_without))
        for epochs in ADAPT_EPOCHS:
            adapt = replace(config, epochs=epochs, lr=config.pretrain_lr)
            rows[f"adapt-{epochs}"].append(late_miou(ws, late, items, adapt, fit_without))
    return {"images": len(ids), "late": max(1, round(late_fraction * len(ids))), "miou": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--variant", default="standard", choices=("standard", "holdout"))
    parser.add_argument("--late", type=float, default=0.08, help="share of the images that join late")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "data", SyntheticConfig(n_images=args.images, seed=args.seed, variant=args.variant))
        workspace = str(Path(tmp) / "ws")
        quiet = Execution(progress=False)
        flow_result(ingest_flow, root=str(root), workspace=workspace, execution=quiet)
        for supervision in ("scribbles", "boxes"):
            flow_result(
                graphnet_flow, workspace=workspace, execution=quiet, request=GraphNetRequest(
                    supervision=supervision, preset="offline", until="seeds", evaluate=False, log_to_mlflow=False,
                ),
            )
            results[supervision] = measure(Workspace(workspace), supervision, args.late, args.repeats, args.seed)
    print(f"late images' mIoU (%), {args.variant} variant, median of {args.repeats} draws:")
    print(f"{'supervision':<12}{'images':>7}{'late':>6}" + "".join(f"{name:>11}" for name in results["scribbles"]["miou"]))
    for supervision, result in results.items():
        medians = {name: 100 * statistics.median(values) for name, values in result["miou"].items()}
        result["median"] = medians
        print(f"{supervision:<12}{result['images']:>7}{result['late']:>6}" + "".join(f"{v:>11.1f}" for v in medians.values()))
    out = REPO_ROOT / "benchmarks" / "results" / f"late_images-{args.variant}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": platform.processor() or platform.machine(),
                               "seconds": time.perf_counter() - started, "results": results}, indent=1))
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
