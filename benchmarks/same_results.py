"""Does this checkout compute what another one does? `wsss run` from both, the same stage keys and masks.

    .venv/bin/python benchmarks/same_results.py --base /path/to/other/checkout [--config benchmarks/same_results.yaml]

For a refactor that must not change results: generates the dataset the run config says (a
small one, every weak label, so every path and a segmentation round run), runs `wsss run`
from the other checkout (--base), then from this one, each into the same workspace path (an
offline segmentation round's key names the CAM checkpoint's path) with this Python, and
compares every stage's key and every pseudo-mask array of every image, byte for byte, and
the names of the requests each remembers. Prints the comparison and writes
benchmarks/results/same_results.json; exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from wsss_core.store import Workspace  # noqa: E402


def run_from(checkout: Path, config: Path, workspace: Path) -> None:
    """`wsss run` as that checkout's code does it."""
    command = [sys.executable, "-m", "cli", "run", "--workspace", str(workspace), "--config", str(config), "--no-mlflow"]
    done = subprocess.run(command, cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: wsss run exited {done.returncode}\n{done.stderr[-3000:]}")


def compare(base: Workspace, this: Workspace) -> dict:
    """What differs between two workspaces: stage keys, mask arrays, remembered request names."""
    keys = {name: {s: ws.stage_key(s) for s in ws.stages()} for name, ws in (("base", base), ("this", this))}
    differing_keys = sorted(s for s in keys["base"].keys() | keys["this"].keys() if keys["base"].get(s) != keys["this"].get(s))
    masks, differing_masks = 0, []
    for stage in sorted(s for s in keys["base"] if s.startswith("pseudo/")):
        for image_id in base.image_ids():
            a, b = base.read_array(stage, image_id), this.read_array(stage, image_id)
            masks += 1
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                differing_masks.append(f"{stage} {image_id}")
    return {
        "stages": len(keys["base"]), "differing_keys": differing_keys, "masks": masks,
        "differing_masks": differing_masks, "same_requests": sorted(base.requests()) == sorted(this.requests()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (e.g. main)")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "benchmarks" / "same_results.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="same-results-") as tmp:
        tmp = Path(tmp)
        workspace, config = tmp / "ws", tmp / "run.yaml"
        settings = yaml.safe_load(args.config.read_text())
        settings.setdefault("ingest", {})["root"] = str(tmp / "data")
        config.write_text(yaml.safe_dump(settings))
        for name, checkout in (("base", args.base.resolve()), ("this", REPO_ROOT)):
            run_from(checkout, config, workspace)
            shutil.move(workspace, tmp / name)
        found = compare(Workspace(tmp / "base"), Workspace(tmp / "this"))
    commits = {name: subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True).stdout.strip()
               for name, path in (("base", args.base), ("this", REPO_ROOT))}
    print(f"base {args.base} ({commits['base']}) vs this checkout ({commits['this']}), run config {args.config.name}:")
    print(f"  stage keys: {found['stages']} stages, {len(found['differing_keys'])} differ {found['differing_keys'] or ''}")
    print(f"  pseudo masks: {found['masks']} arrays, {len(found['differing_masks'])} differ {found['differing_masks'][:10] or ''}")
    print(f"  remembered requests: {'the same names' if found['same_requests'] else 'differ'}")
    out = REPO_ROOT / "benchmarks" / "results" / "same_results.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "commits": commits, **found}, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO_ROOT)}")
    if found["differing_keys"] or found["differing_masks"] or not found["same_requests"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
