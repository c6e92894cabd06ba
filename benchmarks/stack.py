"""What the local production stack costs: `wsss stack up` cold and warm, `wsss stack down`, and
the stack's idle footprint (processes, memory, CPU seconds of its services).

    .venv/bin/python benchmarks/stack.py [--rounds 3] [--dask-workers 2]

Each round starts a stack in a fresh folder under /tmp (PostgreSQL's user must reach it), runs
`up` again on it (everything already up), reads its processes' RSS and CPU seconds, and stops it.
Every command is a fresh process, as a user runs it. Prints medians and writes
benchmarks/results/stack.json with every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from wsss_core.stack import stack_processes  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "stack.json"


def timed(args: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DASK_"))}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO_ROOT, env=env | {"PYTHONPATH": str(REPO_ROOT)},
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def footprint(directory: Path) -> dict[str, float]:
    processes = stack_processes(directory)
    rss = cpu = 0.0
    for process in processes:
        try:
            rss += process.memory_info().rss
            times = process.cpu_times()
            cpu += times.user + times.system
        except Exception:  # a process that ended in between
            continue
    return {"processes": len(processes), "rss_mb": rss / 2**20, "cpu_s": cpu}


def one_round(workers: int) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="wsss-stack-bench-", dir="/tmp"))
    directory.chmod(0o711)
    try:
        up = ["stack", "up", "--dir", str(directory), "--dask-workers", str(workers)]
        cold = timed(up)
        warm = timed(up)
        idle = footprint(directory)
        down = timed(["stack", "down", "--dir", str(directory)])
        return {"up_cold_s": cold, "up_warm_s": warm, "down_s": down, **{f"idle_{k}": v for k, v in idle.items()}}
    finally:
        subprocess.run([sys.executable, "-m", "cli", "stack", "down", "--dir", str(directory)], cwd=REPO_ROOT,
                       capture_output=True, env=os.environ | {"PYTHONPATH": str(REPO_ROOT)})
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    rounds = []
    for number in range(1, args.rounds + 1):
        load = os.getloadavg()[0]
        result = one_round(args.dask_workers)
        result["load_before"] = load
        rounds.append(result)
        print(f"round {number}: " + ", ".join(f"{k} {v:.1f}" for k, v in result.items()), flush=True)
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print("medians: " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": f"benchmarks/stack.py --rounds {args.rounds} --dask-workers {args.dask_workers}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "medians": medians, "rounds": rounds,
    }, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
