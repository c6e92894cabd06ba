"""How a segmentation round should turn its network's prediction into labels: the network
alone, kept to the image's label classes, and weighed by its previous labels at several odds.

    .venv/bin/python benchmarks/round_labels.py --workspace WS --labels gcn-boxes [--round 1]
        [--odds 2 4 8 16 32] [--out benchmarks/results/round_labels-NAME.json]

WS is a workspace where `wsss segment --labels METHOD` (or `wsss run`) trained round K. The
round's network predicts each image once (the small preset's inference: one scale with flips);
every variant is then made from those probabilities as `predict.round_probabilities` makes it,
with the dense CRF after it where the variant says, and scored against the workspace's GT per
split beside the labels the round learned from (round K-1). Nothing is written to the workspace.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tasks.segmentation import segmentation_checkpoint  # noqa: E402
from flows.segment import round_stages  # noqa: E402
from wsss_core.crf import crf_inference  # noqa: E402
from wsss_core.manual import used_mask  # noqa: E402
from wsss_core.metrics import ConfusionMatrix  # noqa: E402
from wsss_core.segmentation.config import SegmentationConfig  # noqa: E402
from wsss_core.segmentation.model import load_segmentation_model  # noqa: E402
from wsss_core.segmentation.predict import predict_probabilities, round_probabilities  # noqa: E402
from wsss_core.store import Workspace  # noqa: E402


def variants(odds: list[float]) -> dict[str, tuple[dict, bool]]:
    """name -> (inference settings on top of the small preset's, CRF after it)."""
    named = {
        "network": ({"label_classes_only": False, "label_odds": None}, False),
        "network+crf": ({"label_classes_only": False, "label_odds": None}, True),
        "classes+crf": ({"label_classes_only": True, "label_odds": None}, True),
    }
    for value in odds:
        named[f"odds {value:g}"] = ({"label_classes_only": True, "label_odds": value}, False)
        named[f"odds {value:g}+crf"] = ({"label_classes_only": True, "label_odds": value}, True)
    return named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--labels", required=True, help="the pseudo-mask method round 1 trained on, e.g. gcn-boxes")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--odds", type=float, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--labels-crf-odds", type=float, nargs="*", default=[8],
                        help="also score the labels alone (uniform network) weighed at these odds, then the CRF")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    ws = Workspace(args.workspace).require()
    labels = f"pseudo/{args.labels.removeprefix('pseudo/')}"
    previous = labels if args.round == 1 else round_stages(labels, args.round - 1)[1]
    training, masks = round_stages(labels, args.round)
    network = load_segmentation_model(ws.path / segmentation_checkpoint(training), "cpu")
    base = SegmentationConfig.small().inference
    named = variants(args.odds)
    classes = len(ws.classes)
    started = time.perf_counter()
    scores: dict[str, dict[str, ConfusionMatrix]] = {}
    done = ws.done_ids(previous)
    for split in ws.splits():
        ids = [i for i in ws.split_ids(split) if i in done and ws.has_array("gt", i)]
        for image_id in ids:
            image, gt = ws.read_array("images", image_id), ws.read_array("gt", image_id)
            prev = used_mask(ws, previous, image_id)
            probs = predict_probabilities(network, image, base.scales, base.flip, "cpu")
            scores.setdefault("labels (round %d)" % (args.round - 1), {}).setdefault(split, ConfusionMatrix(classes)).update(prev, gt)
            if ws.has_array(masks, image_id):
                scores.setdefault("the workspace's round", {}).setdefault(split, ConfusionMatrix(classes)).update(
                    ws.read_array(masks, image_id), gt)
            # The labels alone through the same weighing and CRF (a network with no opinion): what the
            # network itself adds at the chosen odds.
            for odds in args.labels_crf_odds:
                uniform = np.full_like(probs, 1.0 / len(probs))
                alone = crf_inference(image, round_probabilities(uniform, replace(base, label_odds=odds), prev), base.crf_config)
                scores.setdefault(f"labels odds {odds:g}+crf", {}).setdefault(split, ConfusionMatrix(classes)).update(
                    alone.argmax(axis=0), gt)
            for name, (settings, crf) in named.items():
                shaped = round_probabilities(probs, replace(base, **settings), prev)
                final = crf_inference(image, shaped, base.crf_config) if crf else shaped
                scores.setdefault(name, {}).setdefault(split, ConfusionMatrix(classes)).update(final.argmax(axis=0), gt)
    table = {name: {split: round(100 * m.miou(), 1) for split, m in by_split.items()} for name, by_split in scores.items()}
    splits = ws.splits()
    print(f"{labels} round {args.round}, mIoU (%):")
    print(f"{'variant':24s}" + "".join(f"{s:>8s}" for s in splits))
    for name, row in table.items():
        print(f"{name:24s}" + "".join(f"{row.get(s, float('nan')):8.1f}" for s in splits))
    result = {
        "workspace": str(ws.path), "labels": labels, "round": args.round, "miou": table,
        "images": {s: m.images for s, m in next(iter(scores.values())).items()},
        "seconds": round(time.perf_counter() - started, 1), "machine": platform.platform(),
        "command": " ".join(sys.argv),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
