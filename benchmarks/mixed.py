"""Mixed supervision: do a dataset's few scribbled and boxed images teach its tag-only ones?

    .venv/bin/python benchmarks/mixed.py --seed S [--images 80] [--mix scribbles=0.2,boxes=0.2,tags=0.6] [--out DIR]

Generates `wsss generate --variant wild --seed S --label-mix MIX` (without --seed: a random
one, printed and saved) and runs `wsss run` on it with the paths graphnet-scribbles,
graphnet-boxes, graphnet-tags and graphnet-mixed, as the demo runs them (offline GraphNet,
the small CAM preset), without segmentation rounds. Each path runs over the images that
carry its label: gcn-tags over every image (the tags path alone), gcn-scribbles over the
scribbled ones, gcn-boxes over the boxed ones. Then, per label group (from the evaluation's
`labels:<group>` rows), the mIoU of pseudo/mixed against the group's own path:

    tags       pseudo/gcn-tags (the tags path's best masks; pseudo/cam beside it)
    scribbles  pseudo/gcn-scribbles
    boxes      pseudo/gcn-boxes
    both       the better of the two

Prints the table and writes benchmarks/results/mixed-wild-<seed>.json.
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
OWN_PATHS = {"tags": ("gcn-tags",), "scribbles": ("gcn-scribbles",), "boxes": ("gcn-boxes",),
             "boxes+scribbles": ("gcn-scribbles", "gcn-boxes")}
RUN_CONFIG = """\
ingest: {{root: {root}, splits: [train, val]}}
paths: [graphnet-scribbles, graphnet-boxes, graphnet-tags, graphnet-mixed]
graphnet: {{preset: offline, crf: false}}
affinitynet: {{preset: small, crf: false}}
segmentation: {{rounds: 0}}
evaluate: true
mlflow: false
execution: {{engine: threads, batch_size: 16, progress: false}}
"""


def wsss(*args: str) -> None:
    command = [sys.executable, "-m", "cli", *args]
    print("+ wsss " + " ".join(args), flush=True)
    subprocess.run(command, check=False, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def group_table(results: dict) -> list[dict]:
    """One row per label group: its images, pseudo/mixed's mIoU, its own path's, and the gain (points)."""
    rows = []
    groups = sorted({s.removeprefix("labels:") for r in results.values() for s in r.get("splits", {}) if s.startswith("labels:")})
    for group in groups:
        def miou(method: str) -> float | None:
            scores = results.get(f"pseudo/{method}", {}).get("splits", {}).get(f"labels:{group}") or {}
            return 100 * scores["miou"] if scores.get("images") and scores.get("miou") is not None else None

        own = {m: miou(m) for m in OWN_PATHS.get(group, ())}
        best = max((m for m in own if own[m] is not None), key=lambda m: own[m], default=None)
        mixed = miou("mixed")
        images = results["pseudo/mixed"]["splits"][f"labels:{group}"]["images"]
        rows.append({
            "group": group, "images": images, "own_path": best, "own_miou": own.get(best) if best else None,
            "mixed_miou": mixed, "gain": mixed - own[best] if best and mixed is not None else None,
            "cam_miou": miou("cam") if group == "tags" else None,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="wild seed (default: a random one, printed)")
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--mix", default="scribbles=0.2,boxes=0.2,tags=0.6")
    parser.add_argument("--out", type=Path, default=None, help="where the dataset and workspace go")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(10_000)
    out = args.out or Path("/tmp") / f"wsss-mixed-{seed}"
    print(f"wild seed {seed}, {args.images} images, label mix {args.mix}", flush=True)
    started = time.perf_counter()
    data, workspace = out / "data", out / "ws"
    if not (data / "synthetic.json").is_file():
        wsss("generate", "--out", str(data), "--images", str(args.images), "--variant", "wild", "--seed", str(seed),
             "--label-mix", args.mix)
    config = out / "run.yaml"
    config.write_text(RUN_CONFIG.format(root=data))
    wsss("run", "--workspace", str(workspace), "--config", str(config))
    results = json.loads((workspace / "reports" / "evaluation-run.json").read_text())["results"]
    rows = group_table(results)
    print(f"\n{'label group':<18}{'images':>7}  {'own path':<15}{'own':>7}{'mixed':>8}{'gain':>7}")
    for row in rows:
        def show(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"
        print(f"{row['group']:<18}{row['images']:>7}  {row['own_path'] or '-':<15}{show(row['own_miou']):>7}"
              f"{show(row['mixed_miou']):>8}{show(row['gain']):>7}")
    overall = {stage.removeprefix("pseudo/"): 100 * r["miou"] for stage, r in results.items() if r.get("miou") is not None}
    print("every image of each mask set: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(overall.items())))
    saved = REPO_ROOT / "benchmarks" / "results" / f"mixed-wild-{seed}.json"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({
        "args": {**vars(args), "seed": seed, "out": str(out)}, "machine": platform.processor() or platform.machine(),
        "seconds": round(time.perf_counter() - started, 1), "groups": rows, "every_image": overall,
    }, indent=1) + "\n")
    print(f"saved {saved}")


if __name__ == "__main__":
    main()
