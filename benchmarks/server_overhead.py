"""Per-command overhead of Prefect: a temporary server per command vs one running server.

    .venv/bin/python benchmarks/server_overhead.py [--runs 3]

Times `wsss ingest` on a tiny dataset already ingested (every image is skipped, so the
time is the command's overhead: imports, Prefect's server or client, the flow run) in
four set-ups: the default (the shared local server of flows/local_server.py, which the
first command started; that first command is timed apart), WSSS_PREFECT_SERVER=temporary
(Prefect starts a temporary server for the command, as every command did before),
PREFECT_API_URL pointing at a `prefect server start` kept running (the "At scale"
advice of docs/orchestration.md), and `wsss status` (runs no flow, imports no Prefect)
for reference.
Each command is a fresh process, as a user runs it. Prints medians and writes
benchmarks/results/server_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from flows.local_server import MODE_VARIABLE, STATE_VARIABLE, stop_server  # noqa: E402
from tests.deploy_helpers import prefect_env, prefect_server  # noqa: E402
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "server_overhead.json"


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO_ROOT, env=env | {"PYTHONPATH": str(REPO_ROOT)},
                   check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsss-server-overhead-") as tmp:
        directory = Path(tmp)
        root = generate_dataset(directory / "data", SyntheticConfig(n_images=4, width=48, height=40, seed=1))
        ingest = ["ingest", "--root", str(root), "--workspace", str(directory / "ws"), "--no-progress"]
        status = ["status", "--workspace", str(directory / "ws")]
        quiet = {"PREFECT_API_URL": None, "PREFECT_LOGGING_LEVEL": "WARNING"}
        temporary_env = prefect_env(directory / "temporary-home", "unused", {**quiet, MODE_VARIABLE: "temporary"})
        shared_env = prefect_env(directory / "shared-home", "unused", {**quiet, STATE_VARIABLE: str(directory / "state")})
        times: dict[str, list[float]] = {"shared_server": [], "temporary_server": [], "running_server": [],
                                         "status_no_prefect": []}
        with prefect_server(directory / "server") as server:
            running_env = server.env({"PREFECT_LOGGING_LEVEL": "WARNING"})
            timed(ingest, running_env)  # the real ingest: later runs skip every image
            load_before = list(os.getloadavg())
            shared_first_s = timed(ingest, shared_env)  # starts the shared server
            for _ in range(args.runs):  # interleaved, so that a change of load hits every set-up
                times["shared_server"].append(timed(ingest, shared_env))
                times["temporary_server"].append(timed(ingest, temporary_env))
                times["running_server"].append(timed(ingest, running_env))
                times["status_no_prefect"].append(timed(status, temporary_env))
            stop_server(directory / "state")
    medians = {name: statistics.median(values) for name, values in times.items()}
    report = {
        "command": "wsss ingest on 4 already-ingested images (pure overhead); wsss status for reference",
        "runs": args.runs,
        "seconds": times,
        "median_s": medians,
        "shared_server_first_command_s": shared_first_s,
        "saved_per_flow_command_s": medians["temporary_server"] - medians["shared_server"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": load_before,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, value in medians.items():
        print(f"{name:>20}: median {value:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"{'shared, 1st command':>20}: {shared_first_s:6.2f} s  (starts the shared server)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
