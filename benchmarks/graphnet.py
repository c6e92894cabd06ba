"""Throughput of each GraphNet stage at 500x375 (VOC's usual image size), in images per second.

    .venv/bin/python benchmarks/graphnet.py [--images 16] [--runs 3] [--device cpu|cuda]

Runs the wsss_core functions the batched tasks call, on built-in synthetic images of
500x375, one stage after the other, in this process (no Prefect, no storage: those costs
are the same for every stage and measured by the flow's own progress bars). Each stage is
timed --runs times over all images; the median is reported. CNN features: VGG-16 (the
paper's) and ResNet-50 at stride 8, random weights (the speed does not depend on them),
images per forward pass 4. GCNs: 16 images per block-diagonal batch, as the flow does.
Prints a table and writes benchmarks/results/graphnet.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from wsss_core.backbones import build_backbone  # noqa: E402
from wsss_core.graphnet.baselines import box_rectangles, nearest_scribble_fill  # noqa: E402
from wsss_core.data.readers import open_reader  # noqa: E402
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402
from wsss_core.graphnet.features import extract_feature_maps, node_features, pool_per_superpixel  # noqa: E402
from wsss_core.graphnet.gcn import GraphInput, pretrain_gcn, propagate_gcn  # noqa: E402
from wsss_core.graphnet.graph import build_graph  # noqa: E402
from wsss_core.graphnet.config import GraphNetConfig  # noqa: E402
from wsss_core.graphnet.masks import crf_node_mask, node_mask  # noqa: E402
from wsss_core.graphnet.label_propagation import propagate_labels  # noqa: E402
from wsss_core.graphnet.seeds import drawn_classes_only, scribble_seeds  # noqa: E402
from wsss_core.graphnet.superpixels import compute_superpixels  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "graphnet.json"
GCN_BATCH = 16


def median_seconds(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def load_images(count: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        root = generate_dataset(Path(folder), SyntheticConfig(n_images=count, width=500, height=375, val_fraction=0.0))
        reader = open_reader(root)
        samples = [reader.load(image_id) for image_id in reader.image_ids()]
    return [
        {"image": s.image, "scribble": s.scribble, "boxes": s.boxes_array(), "classes": len(reader.classes)}
        for s in samples
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what the GCN tasks do; the CNN rows set their own below
    device = torch.device(args.device)
    items = load_images(args.images)
    n = len(items)
    offline = GraphNetConfig.offline()
    paper = GraphNetConfig.paper()
    results: dict[str, float] = {}

    def stage(name: str, work: Callable[[], object], runs: int = args.runs) -> None:
        seconds = median_seconds(work, runs)
        results[name] = n / seconds
        print(f"{name:<42} {n / seconds:8.2f} img/s", flush=True)

    stage("superpixels (SLIC)", lambda: [compute_superpixels(x["image"], offline.superpixels) for x in items])
    for x in items:
        x["superpixels"] = compute_superpixels(x["image"], offline.superpixels)
        x["n_nodes"] = int(x["superpixels"].max()) + 1

    torch.set_num_threads(max(torch.get_num_threads(), len(os.sched_getaffinity(0))))
    for name in ("vgg16", "resnet50"):
        backbone = build_backbone(name, "none").to(device).eval()
        images = [x["image"] for x in items]
        stage(f"features ({name}, stride 8, {device.type})", lambda: extract_feature_maps(backbone, images, device, 4), 1)
        if name == "vgg16":
            maps = extract_feature_maps(backbone, images, device, 4)
    torch.set_num_threads(1)
    stage("pool CNN features per superpixel (vgg16)", lambda: [
        pool_per_superpixel(m, x["superpixels"], x["n_nodes"]) for m, x in zip(maps, items)
    ])

    nodes = offline.graphs.nodes.feature_config()
    edges = offline.graphs.edges.feature_config()

    def graphs() -> list[GraphInput]:
        out = []
        for x in items:
            features = node_features(None, x["image"], x["superpixels"], x["n_nodes"], nodes)
            edge_features = node_features(None, x["image"], x["superpixels"], x["n_nodes"], edges)
            graph = build_graph(x["superpixels"], edge_features, offline.graphs.graph)
            out.append((features, graph))
        return out

    stage("graphs (offline: colour+texture nodes)", graphs)

    def seeds() -> list:
        return [
            drawn_classes_only(scribble_seeds(x["superpixels"], x["scribble"], x["classes"], x["n_nodes"]))
            for x in items
        ]

    stage("seeds (scribbles)", seeds)
    problems = [GraphInput(f, g, s) for (f, g), s in zip(graphs(), seeds())]

    def batched(config, init=None) -> list[np.ndarray]:
        out = []
        for start in range(0, n, GCN_BATCH):
            out += propagate_gcn(problems[start : start + GCN_BATCH], config, device, init=init)
        return out

    stage("GCN per image (paper: Kipf, 200 epochs)", lambda: batched(paper.gcn))
    stage("GCN shared fit (offline: 100 epochs)", lambda: pretrain_gcn(problems, offline.gcn, device))
    weights = pretrain_gcn(problems, offline.gcn, device)
    stage("GCN shared, labelling (offline)", lambda: batched(offline.gcn, weights))
    stage("label propagation", lambda: [propagate_labels(p.graph, p.seeds) for p in problems])
    probabilities = batched(offline.gcn, weights)
    stage("masks (paint nodes)", lambda: [node_mask(x["superpixels"], p) for x, p in zip(items, probabilities)])
    stage(
        "masks + dense CRF",
        lambda: [crf_node_mask(x["image"], x["superpixels"], p) for x, p in zip(items, probabilities)],
        1,
    )
    stage("baseline: nearest scribble", lambda: [nearest_scribble_fill(x["scribble"]) for x in items])
    stage("baseline: box rectangles", lambda: [box_rectangles(x["boxes"], x["image"].shape[:2]) for x in items])

    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "images": n,
        "image_size": "500x375",
        "runs": args.runs,
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "cpu_threads": len(os.sched_getaffinity(0)),
        "images_per_second": results,
    }
    RESULTS_PATH.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
