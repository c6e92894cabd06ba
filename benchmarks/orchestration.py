"""`wsss superpixels` before and after a change, against the plain loop, in one run.

    .venv/bin/python benchmarks/orchestration.py --before REV [--images 800] [--repeats 1] [--data /tmp/wsss-scale]

Checks out REV (git archive) into a temporary folder and runs, alternating the two code
versions, `wsss superpixels --workers N` on fresh copies of one ingested workspace: with
Prefect's temporary server (1 worker) and with one long-lived server (PREFECT_API_URL; 1
and 2 workers); plus the plain walk of benchmarks/scale.py (the stage's task function
called directly, no Prefect) from the current code. Prints medians and writes
benchmarks/results/orchestration.json. The machine is shared: loads are saved with each run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from scale import LongLivedServer, fresh_copy, ingested, measure  # noqa: E402

RESULTS_PATH = HERE / "results" / "orchestration.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision of the code to compare with")
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "wsss-scale")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.data.mkdir(parents=True, exist_ok=True)
    base_env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        scratch_dir = Path(scratch)
        before = scratch_dir / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", args.before], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        trees = {"before": before, "after": REPO_ROOT}
        envs = {name: {**base_env, "PYTHONPATH": str(tree)} for name, tree in trees.items()}
        source = ingested(args.data, args.images, envs["after"])
        images = len(list((source / "markers" / "ingest").rglob("*.json")))
        home = scratch_dir / "prefect-home"
        home.mkdir()
        server = LongLivedServer(home, envs["after"])
        runs: dict[str, list[dict]] = {}
        try:
            for _ in range(args.repeats):
                workspace = fresh_copy(source, scratch_dir)
                plain = [sys.executable, str(HERE / "scale.py"), "--plain", "superpixels", str(workspace)]
                print("plain ...", flush=True)
                runs.setdefault("plain", []).append(measure(plain, envs["after"], REPO_ROOT))
                for server_kind, workers in (("temporary", 1), ("long-lived", 1), ("long-lived", 2)):
                    for version in ("before", "after"):
                        workspace = fresh_copy(source, scratch_dir)
                        env = dict(envs[version])
                        if server_kind == "long-lived":
                            env["PREFECT_API_URL"] = server.url
                        cli = "cli" if (trees[version] / "cli").is_dir() else "flows.cli"  # its home before cli/
                        command = [sys.executable, "-m", cli, "superpixels", "--workspace", str(workspace),
                                   "--workers", str(workers), "--no-progress"]
                        name = f"{version} w{workers} {server_kind}"
                        print(f"{name} ...", flush=True)
                        result = measure(command, env, trees[version])
                        runs.setdefault(name, []).append(result)
                        print(f"  {result['wall_s']} s (load {result['load_before']})", flush=True)
        finally:
            server.stop()
    plain_s = statistics.median(r["wall_s"] for r in runs["plain"])
    summary = {}
    print(f"\n{images} images; plain walk {plain_s:.1f} s")
    for name, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        summary[name] = {"median_wall_s": wall, "vs_plain": round(wall / plain_s, 3),
                         "loads": [r["load_before"] for r in results], "walls": [r["wall_s"] for r in results]}
        print(f"  {name:24} {wall:7.1f} s  {wall / plain_s:5.2f}x plain")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": images, "image_size": [256, 192], "before": args.before,
                                    "command": " ".join(["benchmarks/orchestration.py", *sys.argv[1:]]),
                                    "cpus": os.cpu_count(), "summary": summary, "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
