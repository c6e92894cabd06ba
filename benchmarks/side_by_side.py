"""`wsss superpixels --workers 1` and the loop in memory run at the same time, side by side.

    .venv/bin/python benchmarks/side_by_side.py [--size 1000] [--rounds 4] [--cores 0 1] [--data /tmp/wsss-scale]
        [--out benchmarks/results/side-by-side.json]

benchmarks/scale.py runs the command and the loop one after the other, and on a shared
machine whose speed drifts by 10-25 % from minute to minute the ratio of the two moves with
it. Here each round starts both at once, each pinned to a core of its own (taskset), so that a
slow spell of the machine slows both; the two cores are not equally fast at a given time
either, so the rounds alternate which run gets which core (use an even --rounds): the command (start-up, storage and flow included, on a fresh copy of the
ingested workspace, the shared local Prefect server) and the superpixels core function in a
loop over the same images read into memory beforehand (its loop timed alone, as scale.py's
`memory` run). Both share the machine's memory bandwidth and the server's CPU time, so both
run somewhat slower than alone; what is compared is the ratio in each round. Reports each
round's walls and CPU seconds and the median ratio; writes the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale  # noqa: E402

RESULTS_PATH = scale.REPO_ROOT / "benchmarks" / "results" / "side-by-side.json"


def one_round(source: Path, scratch: Path, env: dict[str, str], loop_core: int, command_core: int) -> dict[str, float]:
    workspace = scale.fresh_copy(source, scratch)
    command = ["taskset", "-c", str(command_core), *scale.WSSS, "superpixels", "--workspace", str(workspace), "--workers", "1", "--no-progress"]
    loop_command = ["taskset", "-c", str(loop_core), sys.executable, str(Path(scale.__file__).resolve()), "--memory", str(source)]
    results: dict[str, dict] = {}

    def run(name: str, args: list[str]) -> None:
        results[name] = scale.measure(args, env, scale.REPO_ROOT, keep_output=name == "loop")

    threads = [threading.Thread(target=run, args=("loop", loop_command)), threading.Thread(target=run, args=("command", command))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loop = json.loads(results["loop"]["output"].strip().splitlines()[-1])
    command_run = results["command"]
    return {
        "loop_core": loop_core, "command_core": command_core,
        "command_wall_s": command_run["wall_s"], "command_cpu_s": command_run["cpu_s"],
        "loop_wall_s": round(loop["loop_s"], 2), "loop_cpu_s": round(loop["loop_cpu_s"], 2),
        "wall_ratio": round(command_run["wall_s"] / loop["loop_s"], 3),
        "cpu_ratio": round(command_run["cpu_s"] / loop["loop_cpu_s"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cores", type=int, nargs=2, default=[0, 1], help="the two cores to pin the runs to")
    parser.add_argument("--data", type=Path, default=Path("/tmp/wsss-scale"))
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    env = scale.benchmark_env()
    source = scale.ingested(args.data, args.size, env)
    rounds = []
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        for number in range(args.rounds):
            first, second = args.cores if number % 2 == 0 else args.cores[::-1]
            rounds.append(one_round(source, Path(scratch), env, loop_core=first, command_core=second))
            print(f"round {number + 1}/{args.rounds}: {rounds[-1]}", flush=True)
    result = {
        "size": args.size, "rounds": rounds,
        "median_wall_ratio": round(statistics.median(r["wall_ratio"] for r in rounds), 3),
        "median_cpu_ratio": round(statistics.median(r["cpu_ratio"] for r in rounds), 3),
        "command": " ".join(["benchmarks/side_by_side.py", *sys.argv[1:]]),
    }
    print(f"command against the loop, side by side: wall {result['median_wall_ratio']}x, CPU {result['median_cpu_ratio']}x (medians of {args.rounds} rounds)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
