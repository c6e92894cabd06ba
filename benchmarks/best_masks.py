"""Each supervision's best masks, chosen on datasets nobody tuned on (issue 32 point 2).

    .venv/bin/python benchmarks/best_masks.py [--wild S1 S2 S3] [--holdout 1] [--images 60] [--out DIR]
                                             [--only DATASET ...]

For each dataset (`wsss generate --variant wild --seed S` per wild seed, without --wild three
random ones, printed and saved; and `--variant holdout --seed 1`) it runs `wsss run` with the
paths graphnet-scribbles, graphnet-boxes, affinitynet (crf true, so pseudo/rw and
pseudo/rw-crf both exist) and graphnet-tags, as examples/demo.yaml runs them (offline
GraphNet, the small AffinityNet preset with 6 affinity epochs), without segmentation rounds,
and reads the train and val mIoU of every mask set from the evaluation. Mask sets by supervision:

    scribbles  gcn-scribbles, nearest-scribbles
    boxes      gcn-boxes, box-rectangles
    tags       cam, rw, rw-crf, gcn-tags

The winner of a supervision (RULE below): the highest mean train mIoU over the datasets,
provided it is not more than LOSS_MARGIN points below the best of its group on any dataset;
else the next one by mean that satisfies this. Train mIoU, because the masks a path hands
on are its train images' (the rounds train on them); val beside it shows the same on images
the paths did not fit on.

A dataset whose workspace has its evaluation already is not run again (--only runs some of
them, e.g. two processes side by side; a last run without --only collects them all).
Prints a markdown table and writes benchmarks/results/best_masks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GROUPS = {
    "scribbles": ("gcn-scribbles", "nearest-scribbles"),
    "boxes": ("gcn-boxes", "box-rectangles"),
    "tags": ("cam", "rw", "rw-crf", "gcn-tags"),
}
LOSS_MARGIN = 5.0  # points of train mIoU a winner may lose to its group's best on one dataset
RULE = (f"highest mean train mIoU over the datasets, and never more than {LOSS_MARGIN:g} points below "
        "the best of its supervision on any one dataset")
RUN_CONFIG = """\
ingest: {{root: {root}, splits: [train, val]}}
paths: [graphnet-scribbles, graphnet-boxes, affinitynet, graphnet-tags]
graphnet: {{preset: offline, crf: false}}
affinitynet: {{preset: small, crf: true, overrides: {{affinity_train: {{epochs: 6}}}}}}
segmentation: {{rounds: 0}}
evaluate: true
mlflow: false
execution: {{engine: threads, batch_size: 16, progress: false}}
"""


def wsss(*args: str, log: Path) -> None:
    print("+ wsss " + " ".join(args), flush=True)
    with log.open("a") as out:
        subprocess.run([sys.executable, "-m", "cli", *args], check=False, cwd=REPO_ROOT, stdout=out,
                       stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def run_dataset(name: str, variant: str, seed: int, images: int, out: Path) -> dict:
    """Generate and run one dataset (unless its evaluation is there); its mask sets' train/val mIoU."""
    folder = out / name
    data, workspace = folder / "data", folder / "ws"
    evaluation = workspace / "reports" / "evaluation-run.json"
    folder.mkdir(parents=True, exist_ok=True)
    seconds = None
    if not evaluation.is_file():
        started = time.perf_counter()
        log = folder / "run.log"
        if not (data / "synthetic.json").is_file():
            wsss("generate", "--out", str(data), "--images", str(images), "--variant", variant, "--seed", str(seed), log=log)
        config = folder / "run.yaml"
        config.write_text(RUN_CONFIG.format(root=data))
        wsss("run", "--workspace", str(workspace), "--config", str(config), log=log)
        seconds = round(time.perf_counter() - started, 1)
        (folder / "seconds.json").write_text(json.dumps({"seconds": seconds}) + "\n")
    elif (folder / "seconds.json").is_file():
        seconds = json.loads((folder / "seconds.json").read_text())["seconds"]
    results = json.loads(evaluation.read_text())["results"]
    masks = {}
    for methods in GROUPS.values():
        for method in methods:
            splits = results.get(f"pseudo/{method}", {}).get("splits", {})
            masks[method] = {split: round(100 * splits[split]["miou"], 1) if splits.get(split, {}).get("miou") is not None
                             else None for split in ("train", "val")}
    return {"variant": variant, "seed": seed, "images": images, "seconds": seconds, "masks": masks}


def winners(datasets: dict[str, dict]) -> dict[str, dict]:
    """Per supervision: each mask set's mean train mIoU, its worst loss to the group's best, the winner (RULE)."""
    chosen = {}
    for group, methods in GROUPS.items():
        def train(name: str, method: str) -> float:
            value = datasets[name]["masks"][method]["train"]
            return float("-inf") if value is None else value

        mean = {m: round(sum(train(d, m) for d in datasets) / len(datasets), 1) for m in methods}
        worst = {m: round(max(max(train(d, o) for o in methods) - train(d, m) for d in datasets), 1) for m in methods}
        ranked = sorted(methods, key=lambda m: -mean[m])
        winner = next((m for m in ranked if worst[m] <= LOSS_MARGIN), ranked[0])
        chosen[group] = {"winner": winner, "mean_train": mean, "worst_loss": worst}
    return chosen


def table(datasets: dict[str, dict], chosen: dict[str, dict]) -> str:
    names = list(datasets)
    lines = ["| supervision | masks | " + " | ".join(f"{n} train / val" for n in names) + " | mean train | worst loss |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for group, methods in GROUPS.items():
        for method in methods:
            def cell(name: str) -> str:
                scores = datasets[name]["masks"][method]
                return " / ".join("-" if scores[s] is None else f"{scores[s]:.1f}" for s in ("train", "val"))
            mark = "**" if chosen[group]["winner"] == method else ""
            lines.append(f"| {group} | {mark}{method}{mark} | " + " | ".join(cell(n) for n in names)
                         + f" | {chosen[group]['mean_train'][method]:.1f} | {chosen[group]['worst_loss'][method]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wild", type=int, nargs="*", default=None, help="wild seeds (default: three random ones, printed)")
    parser.add_argument("--holdout", type=int, default=1, help="the holdout variant's seed")
    parser.add_argument("--images", type=int, default=60, help="per dataset, train + val")
    parser.add_argument("--out", type=Path, default=Path("/tmp/wsss-best-masks"))
    parser.add_argument("--only", nargs="*", default=None, help="run only these datasets (e.g. wild-123 holdout-1)")
    args = parser.parse_args()
    wild = args.wild if args.wild is not None else [secrets.randbelow(1_000_000_000) for _ in range(3)]
    print(f"wild seeds {' '.join(map(str, wild))}, holdout seed {args.holdout}, {args.images} images each", flush=True)
    plan = {f"wild-{s}": ("wild", s) for s in wild} | {f"holdout-{args.holdout}": ("holdout", args.holdout)}
    datasets = {}
    for name, (variant, seed) in plan.items():
        if args.only is not None and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        datasets[name] = run_dataset(name, variant, seed, args.images, args.out)
        print(json.dumps(datasets[name]["masks"]), flush=True)
    if args.only is not None:
        return
    chosen = winners(datasets)
    print()
    print(table(datasets, chosen))
    print(f"\nrule: {RULE}")
    for group, found in chosen.items():
        print(f"{group}: {found['winner']}")
    saved = REPO_ROOT / "benchmarks" / "results" / "best_masks.json"
    saved.write_text(json.dumps({
        "args": {**vars(args), "wild": wild, "out": str(args.out)}, "machine": platform.processor() or platform.machine(),
        "rule": RULE, "datasets": datasets, "supervisions": chosen,
    }, indent=1) + "\n")
    print(f"saved {saved}")


if __name__ == "__main__":
    main()
