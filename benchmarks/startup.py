"""How fast a flow command starts: with nothing to do, and until it computes (issue 31 point 1).

    .venv/bin/python benchmarks/startup.py [--images 1000] [--runs 5] [--before DIR]

Generates the built-in dataset (--images images of 64x48, every split), ingests it and
computes its superpixels, then times, each command a fresh process as a user runs it, in
--runs interleaved rounds (so that a change of load hits every kind alike):

- superpixels_noop, ingest_noop: `wsss superpixels` and `wsss ingest` on the finished
  workspace: every image is done, the flow still runs and is recorded on the server;
- status: `wsss status` (runs no flow, imports no Prefect), for reference;
- import_prefect: `python -c "import prefect"`, the floor of any command that runs a flow;
- prefect_flow: import prefect, then one empty flow run (one string parameter) on the shared
  server with the settings wsss uses there (flows/local_server.py) and its exit (gc.freeze):
  the floor of a flow command;
- superpixels_first_image: `wsss superpixels --compactness C` with a C not used before, on a
  second workspace holding the val images (a fifth of them), so that every image is
  computed and the first workspace stays finished: seconds from the process's start to the
  earliest completion marker the command writes (markers are written when a batch of 16
  images is flushed, so this is when computing started plus one batch).

Wall time is the whole process (interpreter start and exit included); CPU time is user +
system of the process and the children it waited for (os.wait4), and server_cpu_s the
shared server's CPU during the command (/proc), which runs in its own process. The shared
server runs through every round; the first command, which starts it, is timed apart
(first_command_s). The machine is shared: the load average is saved with the results.

--before DIR: also run the commands from another checkout (e.g. `git archive <rev> | tar -x
-C DIR`) with its own shared server, interleaved with this one, on the same workspace
(the before_* kinds). Writes benchmarks/results/startup.json.
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
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from wsss_core.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "startup.json"
TICKS = os.sysconf("SC_CLK_TCK")

# An empty flow on the shared server, as call_flow runs one (cli/app.py): the floor of a flow command.
# It takes a parameter, as every wsss flow does: Prefect serialises parameters with FastAPI's
# jsonable_encoder, and importing FastAPI (with Starlette) is ~0.3 s of that floor.
PREFECT_FLOW = """
import atexit, gc
atexit.register(gc.freeze)  # as the wsss command does (cli/app.py): no last garbage collections
import flows  # wsss's Prefect defaults
from flows.local_server import start_shared_server
from prefect import flow

server = start_shared_server()
server.use()

@flow(name="startup-floor")
def empty(workspace: str):
    return None

with server.flow_settings():
    empty(workspace="ws")
"""


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a running process (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def server_pid(state: Path) -> int | None:
    try:
        return int(json.loads((state / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def run(argv: list[str], env: dict[str, str], cwd: Path, state: Path) -> dict[str, float]:
    """One command in a fresh process: wall, CPU (its own and its waited-for children's), the
    shared server's CPU meanwhile, and the wall-clock time it started at."""
    server_before = process_cpu_s(server_pid(state))
    started_at = time.time()
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {stderr.decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "server_cpu_s": process_cpu_s(server_pid(state)) - server_before, "started_at": started_at}


def first_marker_s(workspace: Path, stage: str, key_before: set[str], started_at: float) -> float:
    """Seconds from started_at to the earliest marker time of the stage's new key."""
    times = []
    for key_dir in (workspace / "markers" / stage).iterdir():
        if key_dir.name in key_before:
            continue
        for marker in key_dir.glob("*.json"):
            times.append(json.loads(marker.read_text())["time"])
    if not times:
        raise RuntimeError(f"no new {stage} markers in {workspace}")
    return min(times) - started_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout to run the same commands from, interleaved")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    checkouts = {"": REPO_ROOT, **({"before_": args.before.resolve()} if args.before else {})}
    with tempfile.TemporaryDirectory(prefix="wsss-startup-") as tmp:
        directory = Path(tmp)
        root = generate_dataset(directory / "data", SyntheticConfig(n_images=args.images, width=64, height=48, seed=1))
        workspace = directory / "ws"
        work_workspace = directory / "ws-work"  # the commands with work: their new settings leave `ws` finished
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "WSSS_", "DASK_"))}
        base |= {"PREFECT_HOME": str(directory / "prefect-home"), "TORCH_HOME": str(directory / "torch")}
        envs = {prefix: base | {"PYTHONPATH": str(checkout), "WSSS_STATE_DIR": str(directory / f"{prefix}state")}
                for prefix, checkout in checkouts.items()}
        states = {prefix: directory / f"{prefix}state" for prefix in checkouts}
        wsss = [sys.executable, "-m", "cli"]
        ingest = [*wsss, "ingest", "--root", str(root), "--workspace", str(workspace), "--no-progress",
                  "--split", "train", "--split", "val"]
        superpixels = [*wsss, "superpixels", "--workspace", str(workspace), "--no-progress"]
        first_command_s = {}
        for prefix, checkout in checkouts.items():  # starts each checkout's shared server; the first also ingests
            first_command_s[prefix] = run(ingest, envs[prefix], checkout, states[prefix])["wall_s"]
        run(superpixels, envs[""], REPO_ROOT, states[""])  # computes every image: later runs find them done
        run([*wsss, "ingest", "--root", str(root), "--workspace", str(work_workspace), "--no-progress", "--split", "val"],
            envs[""], REPO_ROOT, states[""])
        load_before = list(os.getloadavg())
        kinds: dict[str, list[dict[str, float]]] = {}
        compactness = 31.0
        for _ in range(args.runs):
            for prefix, checkout in checkouts.items():
                env, state = envs[prefix], states[prefix]
                kinds.setdefault(f"{prefix}superpixels_noop", []).append(run(superpixels, env, checkout, state))
                kinds.setdefault(f"{prefix}ingest_noop", []).append(run(ingest, env, checkout, state))
                compactness += 1  # a setting no run used: every val image is computed
                markers = work_workspace / "markers" / "superpixels"
                keys = {p.name for p in markers.iterdir()} if markers.is_dir() else set()
                work = run([*wsss, "superpixels", "--workspace", str(work_workspace), "--no-progress",
                            "--compactness", str(compactness)], env, checkout, state)
                work["first_image_s"] = first_marker_s(work_workspace, "superpixels", keys, work["started_at"])
                kinds.setdefault(f"{prefix}superpixels_first_image", []).append(work)
            kinds.setdefault("status", []).append(run([*wsss, "status", "--workspace", str(workspace)], envs[""], REPO_ROOT, states[""]))
            kinds.setdefault("import_prefect", []).append(run([sys.executable, "-c", "import prefect"], envs[""], REPO_ROOT, states[""]))
            kinds.setdefault("prefect_flow", []).append(run([sys.executable, "-c", PREFECT_FLOW], envs[""], REPO_ROOT, states[""]))
        load_after = list(os.getloadavg())
        for prefix, checkout in checkouts.items():
            subprocess.run([*wsss, "server", "stop"], cwd=checkout, env=envs[prefix], check=False, capture_output=True)
    medians = {
        kind: {measure: statistics.median(r[measure] for r in runs) for measure in runs[0] if measure != "started_at"}
        for kind, runs in kinds.items()
    }
    report = {
        "what": f"wsss commands on {args.images} generated images of 64x48, each a fresh process; medians of "
                f"{args.runs} interleaved rounds; cpu_s: the process and its waited-for children; server_cpu_s: "
                "the shared Prefect server's meanwhile; first_image_s: process start to the first completion "
                "marker (one batch of 16 images computed)",
        "runs": args.runs,
        "images": args.images,
        "median": medians,
        "all": {kind: [{k: round(v, 3) for k, v in r.items() if k != "started_at"} for r in runs] for kind, runs in kinds.items()},
        "first_command_s": first_command_s,
        "before": str(args.before) if args.before else None,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for kind, values in medians.items():
        shown = "  ".join(f"{name} {value:6.2f}" for name, value in values.items())
        print(f"{kind:>32}: {shown}")
    started = ", ".join(f"{prefix or 'this'} {seconds:.2f} s" for prefix, seconds in first_command_s.items())
    print(f"first command (starts the server): {started}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
