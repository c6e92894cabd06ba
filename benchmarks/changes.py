"""What a re-run costs after the dataset changed, and whether it gives a clean run's outputs.

    .venv/bin/python benchmarks/changes.py [--images 1000] [--fractions 0.01 0.10]
        [--removed 3] [--added 3] [--data /tmp/wsss-changes]

The GraphNet scribbles path (`wsss run --path graphnet-scribbles --rounds 0 --no-evaluate
--no-mlflow --root DATA`: ingest, then the path, in one process, as the scheduled `run` deployment does) on the built-in dataset (train split,
256x192). First a clean run of the whole dataset. Then, for each fraction f, on a copy of that
finished workspace: f of the train images get a corrected scribble, --removed ids leave the
list and --added new images join it; the same command runs again (the re-run), and a
clean run of the changed dataset runs in a new workspace. Reported per fraction: wall time of
the re-run and of the clean run and their ratio (by default against one long-lived Prefect
server, as a scheduled run on a deployment has; --server temporary adds each command's start), what each stage computed in the re-run, and
how the re-run's outputs compare with the clean run's: per image and stage, byte-identical or
not (the stages up to the seeds must be for every image; after the shared GCN, the refit rule
decides: within it the images that did not change keep the masks of the model they were
computed with, past it every image is recomputed), and for the masks the share of pixels on
which the two agree. Prints a table and writes benchmarks/results/changes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.dataset_changes import array_differences, fix_scribble, read_split, remove_from_split, write_split  # noqa: E402
from benchmarks.scale import LongLivedServer  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "changes.json"
WSSS = [sys.executable, "-m", "cli"]
MASKS = "pseudo/gcn-scribbles"
_LINE = re.compile(r"^([\w/.-]+): (\d+) images, (?:(\d+) computed|.*\((\d+) computed)")


ENV: dict[str, str] = dict(os.environ)  # PREFECT_API_URL: the long-lived server, as a scheduled run has


def wsss(*args: str) -> tuple[float, str]:
    """Run one wsss command; its wall time and its output."""
    started = time.perf_counter()
    result = subprocess.run([*WSSS, *args], cwd=REPO_ROOT, capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"wsss {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, result.stderr + result.stdout


RUN = ("run", "--path", "graphnet-scribbles", "--rounds", "0", "--no-evaluate", "--no-mlflow")


def pipeline(root: Path, workspace: Path) -> dict[str, Any]:
    """`wsss run` (ingest + the GraphNet scribbles path, what the scheduled `run` deployment does):
    its wall time and what each stage computed."""
    wall_s, output = wsss(*RUN, "--root", str(root), "--workspace", str(workspace))
    computed = {}
    for line in output.splitlines():
        match = _LINE.match(line.strip())
        if match:
            computed[match.group(1)] = int(match.group(3) or match.group(4))
    notes = [line.strip() for line in output.splitlines() if line.startswith("ingest:") or "since" in line]
    from wsss_core.store import Workspace

    ws = Workspace(workspace)  # each stage's wall time in this run (flows.pipeline.record_wall_time)
    stage_s = {stage: (ws.stage_meta(stage) or {}).get("wall_s") for stage in ws.stages()}
    return {"wall_s": round(wall_s, 2), "stage_s": stage_s, "computed": computed, "notes": notes}


def compare(rerun: Path, clean: Path, touched: set[str]) -> dict[str, Any]:
    """Per stage: how many images hold byte-identical arrays in both workspaces (all of them, and
    of the changed and new ones); for the masks, the share of pixels on which they agree."""
    from wsss_core.store import Workspace

    a, b = Workspace(rerun), Workspace(clean)
    ids = b.image_ids()
    differing: dict[str, set[str]] = {}
    for line in array_differences(a, b, ids):
        stage, image_id = line.split(" ")[:2]
        differing.setdefault(stage, set()).add(image_id)
    result: dict[str, Any] = {"same_images": a.image_ids() == ids, "stages": {}}
    for stage in b.stages():
        if b.stores_arrays(stage):
            wrong = differing.get(stage, set())
            result["stages"][stage] = {"identical": len(ids) - len(wrong), "images": len(ids),
                                       "changed_or_new_identical": len(touched - wrong), "changed_or_new": len(touched),
                                       "changed_or_new_differing": sorted(touched & wrong)[:20]}
    agreement = [float((a.read_array(MASKS, i) == b.read_array(MASKS, i)).mean()) for i in ids]
    result["mask_pixel_agreement"] = {"median": statistics.median(agreement), "min": min(agreement)}
    return result


def change(root: Path, fraction: float, removed: int, added: int, held_back: list[str]) -> dict[str, list[str]]:
    """f of the train images' scribbles fixed, `removed` ids dropped, `added` held-back images listed."""
    ids = read_split(root, "train")
    wanted, fixed = max(1, round(fraction * len(ids))), []
    for image_id in ids:
        if len(fixed) == wanted:
            break
        try:
            fix_scribble(root, image_id)
            fixed.append(image_id)
        except ValueError:  # nothing to correct in this one
            continue
    dropped = [i for i in ids if i not in fixed][:removed]
    for image_id in dropped:
        remove_from_split(root, image_id)
    write_split(root, "train", read_split(root, "train") + held_back[:added])  # held back until now: new
    return {"fixed": fixed, "removed": dropped, "added": held_back[:added]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="train images before the change")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.10])
    parser.add_argument("--removed", type=int, default=3)
    parser.add_argument("--added", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/tmp/wsss-changes"))
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--server", choices=["long-lived", "temporary"], default="long-lived",
                        help="long-lived: one `prefect server start` for every command, as a scheduled run has "
                             "(default); temporary: each command starts Prefect's temporary server")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    server = None
    if args.server == "long-lived":
        (args.data / "prefect").mkdir(exist_ok=True)
        server = LongLivedServer(args.data / "prefect", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
        ENV["PREFECT_API_URL"] = server.url
    try:
        run(args)
    finally:
        if server is not None:
            server.stop()


def run(args: argparse.Namespace) -> None:
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    for name in ("pristine", "data", "ws"):
        shutil.rmtree(args.data / name, ignore_errors=True)
    # A workspace is bound to its dataset's root: every run reads the dataset at one path,
    # laid anew from the pristine copy before each change.
    pristine, root = args.data / "pristine", args.data / "data"
    generate_dataset(pristine, SyntheticConfig(n_images=args.images + args.added, val_fraction=0.0, seed=args.seed))
    listed = read_split(pristine, "train")
    held_back = listed[args.images :]  # the images that join later
    write_split(pristine, "train", listed[: args.images])
    shutil.copytree(pristine, root)
    first = pipeline(root, args.data / "ws")
    print(f"clean run of {args.images} images: {first['wall_s']:.1f} s", flush=True)
    rows = []
    for fraction in args.fractions:
        rerun, clean = (args.data / f"{name}-{fraction}" for name in ("rerun", "clean"))
        shutil.rmtree(root)
        shutil.copytree(pristine, root)
        shutil.copytree(args.data / "ws", rerun)
        changed = change(root, fraction, args.removed, args.added, held_back)
        again = pipeline(root, rerun)
        fresh = pipeline(root, clean)
        touched = set(changed["fixed"]) | set(changed["added"])
        row = {"fraction": fraction, "change": {k: len(v) for k, v in changed.items()}, "rerun": again, "clean": fresh,
               "ratio": round(again["wall_s"] / fresh["wall_s"], 3), "equality": compare(rerun, clean, touched)}
        rows.append(row)
        print(f"{fraction:.0%}: re-run {again['wall_s']:.1f} s, clean {fresh['wall_s']:.1f} s "
              f"({row['ratio']:.1%}); {json.dumps(row['equality']['stages'])}", flush=True)
        for path in (rerun, clean):
            shutil.rmtree(path, ignore_errors=True)
    RESULTS_PATH.write_text(json.dumps({"images": args.images, "server": args.server, "first_clean_run": first,
                                        "runs": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
