"""How the pipeline's cost grows with the dataset, and what the orchestration costs.

    .venv/bin/python benchmarks/scale.py [--sizes 1000 4000] [--graphnet-sizes 250 1000]
        [--workers 1 2] [--data /tmp/wsss-scale] [--servers temporary long-lived] [--repeats 3]

For each size N it generates the built-in dataset (N images of 256x192, cached under --data),
ingests every split, then times, each in a fresh copy of the ingested workspace and a
process of its own:

- plain: the same stage table walked without Prefect: each stage's task function called
  directly (Task.fn) on the command's batches (16 images), one batch after the other, one
  stage after the other, in one process. Same per-batch work (a block stage computes the
  same blocks), same workspace reads and writes and packs, same stage bookkeeping; no flow,
  no task runs, no server. This is "the plain loop's compute and I/O".
- memory (the superpixels path only, --memory): the core function alone, SLIC
  (wsss_core.graphnet.superpixels.compute_superpixels with the command's config) in a loop
  over every image already read into memory: no storage, no stage bookkeeping, no flow.
  Its wall and CPU time are the loop's alone (reading the images first is not counted).
  This is the floor the issue compares `wsss superpixels` against, start-up included:
  vs_memory (medians against medians) and vs_memory_paired (the median over rounds of each
  round's run against that round's loop, which the machine's drifting speed moves less).
- the command (`wsss superpixels`, `wsss graphnet --no-evaluate --no-mlflow`) with 1 and 2
  workers (threads engine), with the default Prefect server ("temporary": the local server
  commands share, started by the first one) and with a long-lived `prefect server start`
  named by PREFECT_API_URL;
- --servers stack: the command run with the environment `wsss stack up` prints (under
  DATA/stack, --dask-workers workers): its batches go to the stack's Dask workers, its flow
  runs to its Prefect server on PostgreSQL. Its CPU time includes every process of the
  stack during the run (the Dask workers' batches too), per service in server_cpu_by_service_s.

Reported per run: wall time (whole process, imports included, for plain runs too), CPU time
(user + system of the process and the children it waited for, plus the long-lived server's
during the run), images/s, orchestration share ((wall - plain wall) / wall, and the same in
CPU time, which other jobs on a shared machine move less), peak memory (max RSS) of the command's
process and of any worker process it starts (the temporary server's excluded), files in
the workspace per image, and the speed-up from 1 to 2 workers. Linearity: seconds per image
at the largest size over the smallest. The machine is shared: the load average is saved
with every run, and --repeats N runs N interleaved rounds and reports each run kind's median
(every wall time kept in walls_s; peak memory is the largest of the rounds). Prints a table
and writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "scale.json"
WSSS = [sys.executable, "-m", "cli"]
COMMANDS = {
    "superpixels": ["superpixels"],
    "graphnet": ["graphnet", "--no-evaluate", "--no-mlflow"],
}


# ----------------------------------------------------------------------------- the plain walk


def plain_walk(workspace: str, path: str) -> None:
    """Run a path's stage table without Prefect (see the module docstring). In its own process."""
    import logging

    import flows  # noqa: F401  (Prefect's defaults; nothing here talks to a server)
    import tasks.graphnet
    from flows.common import DEFAULT_BATCH_SIZE
    from flows.graphnet import feature_weights, graphnet_pipeline
    from flows.pipeline import Pipeline, Stage, finished_by, fit_config, prepare_stage
    from tasks.superpixels import superpixels_batch
    from wsss_core.graphnet.config import resolve_config
    from wsss_core.runner import split_batches
    from wsss_core.store import INGEST_STAGE, Workspace

    # Outside a task run there is no run logger: the shared GCN fit logs to a plain one.
    tasks.graphnet.get_run_logger = lambda: logging.getLogger("tasks.graphnet")
    ws = Workspace(workspace).require()
    config = resolve_config("auto").config
    if path == "superpixels":
        pipeline = Pipeline("superpixels", (Stage("superpixels", superpixels_batch, (INGEST_STAGE,), {"config": config.superpixels}),))
    else:
        pipeline = graphnet_pipeline(config, "scribbles", "gcn", False, feature_weights(ws, config))
    ids = ws.select_ids(None)
    for stage in pipeline.stages:
        eligible = finished_by(ws, pipeline.gates(stage), ids)
        arguments = {**stage.params, **stage.runtime}
        if stage.dataset_level:
            key = prepare_stage(ws, stage.name, fit_config(stage, eligible), stage.reads)
            report = stage.task.fn(workspace=ws, stage=stage.name, key=key, image_ids=eligible, **arguments)
            ws.note_stage(stage.name, fitted_on=len(report.images))
            for image_id in report.images:
                ws.mark_done(stage.name, image_id, key)
        else:
            key = prepare_stage(ws, stage.name, dict(stage.params), stage.reads)
            pending = [i for i in eligible if not ws.is_done(stage.name, i, key)]
            for batch in split_batches(pending, DEFAULT_BATCH_SIZE):
                stage.task.fn(workspace=ws, stage=stage.name, key=key, image_ids=batch, **arguments)


def memory_loop(workspace: str) -> None:
    """The superpixels core function in a loop over images held in memory (see the module
    docstring). Prints {"loop_s", "loop_cpu_s"} as the last line. In its own process."""
    from wsss_core.graphnet.config import resolve_config
    from wsss_core.graphnet.superpixels import compute_superpixels
    from wsss_core.store import Workspace

    ws = Workspace(workspace).require()
    config = resolve_config("auto").config.superpixels
    images = [ws.read_array("images", image_id) for image_id in ws.select_ids(None)]
    compute_superpixels(images[0], config)  # its imports and first call, as the command's start-up pays them
    started, cpu = time.perf_counter(), time.process_time()
    for image in images:
        compute_superpixels(image, config)
    print(json.dumps({"loop_s": time.perf_counter() - started, "loop_cpu_s": time.process_time() - cpu}))


# ----------------------------------------------------------------------------- measuring a process


def _peak_kib(pid: int) -> int | None:
    """A live process's peak resident memory (VmHWM), KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) so far of a live process and its live descendants (the
    long-lived server's); a process that is gone counts 0."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True) if "uvicorn" not in " ".join(child.cmdline())]
    except psutil.Error:
        return []


def measure(args: list[str], env: dict[str, str], cwd: Path, server: Any = None, keep_output: bool = False) -> dict[str, Any]:
    """Run a command; its wall time, exit code, CPU time (with the server's during the run,
    when one is named), peak memory and its workers' (polled VmHWM); keep_output: its output too."""
    by_service = server.cpu_by_service() if hasattr(server, "cpu_by_service") else None
    server_cpu = server.cpu_s() if server else 0.0
    started = time.perf_counter()
    load = os.getloadavg()[0]
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    workers: dict[int, int] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.25):
            for child in _descendants(proc.pid):
                peak = _peak_kib(child)
                if peak:
                    workers[child] = max(workers.get(child, 0), peak)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    server_cpu = server.cpu_s() - server_cpu if server else 0.0
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{output[-3000:]}")
    services = ({name: round(cpu - by_service.get(name, 0.0), 2) for name, cpu in server.cpu_by_service().items()}
                if by_service is not None else None)
    measured = {
        "server_cpu_by_service_s": services,
        "wall_s": round(wall, 2),
        # CPU seconds of the command (and the children it waited for) plus the server's share
        # in that time: less moved by other jobs on the machine than the wall time is.
        "cpu_s": round(usage.ru_utime + usage.ru_stime + server_cpu, 2),
        "server_cpu_s": round(server_cpu, 2),
        "peak_mb": round(usage.ru_maxrss / 1024, 1),
        "worker_peak_mb": round(max(workers.values()) / 1024, 1) if workers else None,
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }
    return {**measured, "output": output} if keep_output else measured


def count_files(workspace: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for folder, _, files in os.walk(workspace):
        top = Path(folder).relative_to(workspace).parts[:1]
        name = top[0] if top else "."
        counts[name] = counts.get(name, 0) + len(files)
    return counts


# ----------------------------------------------------------------------------- data


def ingested(data: Path, size: int, env: dict[str, str]) -> Path:
    """A workspace with `size` built-in images ingested (every split), made once and kept."""
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    root, workspace = data / f"dataset-{size}", data / f"ingested-{size}"
    if (workspace / "done").exists():
        return workspace
    if not (root / "classes.txt").exists():
        generate_dataset(root, SyntheticConfig(n_images=size))
    shutil.rmtree(workspace, ignore_errors=True)
    splits = sorted(p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt") if p.stem != "trainval")
    subprocess.run(
        [*WSSS, "ingest", "--root", str(root), "--workspace", str(workspace), *[a for s in splits for a in ("--split", s)], "--no-progress"],
        env=env, cwd=REPO_ROOT, check=True, capture_output=True,
    )
    (workspace / "done").write_text("")
    return workspace


def fresh_copy(source: Path, scratch: Path) -> Path:
    target = scratch / "ws"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("done"))
    return target


# ----------------------------------------------------------------------------- the benchmark


class LongLivedServer:
    """`prefect server start` on a free port with its own PREFECT_HOME, for PREFECT_API_URL."""

    def __init__(self, home: Path, env: dict[str, str]):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/api"
        prefect = str(Path(sys.executable).with_name("prefect"))
        self.log = open(home / "server.log", "wb")
        self.proc = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--analytics-off"],
            env={**env, "PREFECT_HOME": str(home)}, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server start did not answer on {self.url} (log: {home / 'server.log'})")

    def cpu_s(self) -> float:
        return tree_cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()


class Stack:
    """`wsss stack up` (wsss_core.stack: PostgreSQL, Prefect and MLflow servers on it, a Dask
    scheduler and workers, a Prefect worker) under DIR; its commands run with the environment
    it prints, so their batches go to its Dask workers."""

    def __init__(self, directory: Path, dask_workers: int):
        from wsss_core import stack

        self.directory, self.workers = directory, dask_workers
        self.state = stack.up(directory, stack.StackConfig(dask_workers=dask_workers), say=lambda line: print(f"  stack: {line}", flush=True))
        self.env = stack.environment(self.state)

    def cpu_s(self) -> float:
        """CPU seconds so far of every process of the stack (servers, scheduler, Dask workers)."""
        return sum(self.cpu_by_service().values())

    def cpu_by_service(self) -> dict[str, float]:
        """CPU seconds so far of each service of the stack, with what it spawned (the Dask
        workers' include the batches they computed)."""
        from wsss_core import stack

        seconds = {}
        for name, record in (stack.read_state(self.directory.resolve()) or {"services": {}})["services"].items():
            process = stack.recorded_process(record)
            total = 0.0
            for member in stack.process_tree(process) if process is not None else ():
                try:
                    times = member.cpu_times()
                    total += times.user + times.system
                except Exception:  # noqa: BLE001 - gone meanwhile
                    continue
            seconds[name] = total
        return seconds

    def stop(self) -> None:
        from wsss_core import stack

        stack.down(self.directory)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run kind's repeats as one row: the median run by wall time, with every wall time kept."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["walls_s"] = [r["wall_s"] for r in runs]
    row["cpu_s"] = statistics.median_low(r["cpu_s"] for r in runs)
    row["cpus_s"] = [r["cpu_s"] for r in runs]
    row["peak_mb"] = max(r["peak_mb"] for r in runs)
    return row


def run_size(path: str, size: int, workers: list[int], servers: list[str], data: Path, env: dict[str, str],
             server: LongLivedServer | None, repeats: int, stack: Stack | None = None) -> dict[str, Any]:
    source = ingested(data, size, env)
    images = len([p for p in (source / "markers" / "ingest").rglob("*.json")])
    row: dict[str, Any] = {"path": path, "size": size, "images": images, "repeats": repeats, "runs": {}}
    plans = [("plain", None, None)] + ([("memory", None, None)] if path == "superpixels" else []) + [(f"w{w}-{s}", w, s) for s in servers if s != "stack" for w in workers]
    if "stack" in servers:  # its Dask workers are the workers: --workers does not apply
        plans.append((f"dask{stack.workers}-stack", None, "stack"))
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in plans}
    with tempfile.TemporaryDirectory(dir=data) as scratch:
        scratch_dir = Path(scratch)
        # Interleaved rounds (plain, w1, w2, plain, w1, w2, ...): a busy spell on the shared
        # machine then lands on every run kind rather than on one.
        for round_ in range(repeats):
            for name, count, kind in plans:
                workspace = fresh_copy(source, scratch_dir)
                run_env = dict(env)
                if name == "plain":
                    command = [sys.executable, str(Path(__file__).resolve()), "--plain", path, str(workspace)]
                elif name == "memory":
                    command = [sys.executable, str(Path(__file__).resolve()), "--memory", str(workspace)]
                elif kind == "stack":
                    command = [*WSSS, *COMMANDS[path], "--workspace", str(workspace), "--no-progress"]
                    run_env.update(stack.env)
                else:
                    command = [*WSSS, *COMMANDS[path], "--workspace", str(workspace), "--workers", str(count), "--no-progress"]
                    if kind == "long-lived":
                        run_env["PREFECT_API_URL"] = server.url
                print(f"  {path} {size}: {name} (round {round_ + 1}/{repeats}) ...", flush=True)
                result = measure(command, run_env, REPO_ROOT, {"long-lived": server, "stack": stack}.get(kind), keep_output=name == "memory")
                if name == "memory":  # the loop's own times, not the process's
                    loop = json.loads(result.pop("output").strip().splitlines()[-1])
                    result["process_wall_s"], result["wall_s"] = result["wall_s"], round(loop["loop_s"], 2)
                    result["process_cpu_s"], result["cpu_s"] = result["cpu_s"], round(loop["loop_cpu_s"], 2)
                result["images_per_s"] = round(images / result["wall_s"], 2)
                files = count_files(workspace)
                result["files"] = sum(files.values())
                result["files_per_image"] = round(result["files"] / images, 1)
                result["files_by_folder"] = files
                measured[name].append(result)
                print(f"    {result['wall_s']} s, {result['cpu_s']} CPU s, {result['images_per_s']} img/s, peak {result['peak_mb']} MB, load {result['load_before']}", flush=True)
    row["runs"] = {name: median_run(runs) for name, runs in measured.items()}
    plain, plain_cpu = row["runs"]["plain"]["wall_s"], row["runs"]["plain"]["cpu_s"]
    memory = row["runs"].get("memory")
    for name, result in row["runs"].items():
        if memory and name.startswith("w"):
            result["vs_memory"] = round(result["wall_s"] / memory["wall_s"], 3)
            result["cpu_vs_memory"] = round(result["cpu_s"] / memory["cpu_s"], 3)
            # each round against the same round's loop: the machine's speed drifts between rounds
            ratios = [run["wall_s"] / loop["wall_s"] for run, loop in zip(measured[name], measured["memory"])]
            result["vs_memory_by_round"] = [round(r, 3) for r in ratios]
            result["vs_memory_paired"] = round(statistics.median(ratios), 3)
        if name not in ("plain", "memory"):
            result["orchestration_share"] = round((result["wall_s"] - plain) / result["wall_s"], 3)
            result["orchestration_cpu_share"] = round((result["cpu_s"] - plain_cpu) / result["cpu_s"], 3)
            result["vs_plain"] = round(result["wall_s"] / plain, 3)
    for kind in servers:
        one, two = row["runs"].get(f"w1-{kind}"), row["runs"].get(f"w2-{kind}")
        if one and two:
            row[f"speedup_1_to_2_{kind}"] = round(one["wall_s"] / two["wall_s"], 2)
            pairs = zip(measured[f"w1-{kind}"], measured[f"w2-{kind}"])
            row[f"speedup_1_to_2_{kind}_paired"] = round(statistics.median(a["wall_s"] / b["wall_s"] for a, b in pairs), 2)
    return row


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per image and peak memory at the largest size over the smallest, per run kind."""
    out: dict[str, Any] = {}
    for path in dict.fromkeys(r["path"] for r in rows):
        mine = sorted((r for r in rows if r["path"] == path), key=lambda r: r["size"])
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        out[path] = {
            name: {
                "time_per_image_ratio": round((large["runs"][name]["wall_s"] / large["images"]) / (small["runs"][name]["wall_s"] / small["images"]), 3),
                "peak_memory_ratio": round(large["runs"][name]["peak_mb"] / small["runs"][name]["peak_mb"], 3),
            }
            for name in small["runs"] if name in large["runs"]
        } | {"sizes": [small["size"], large["size"]]}
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'path':12} {'images':>6} {'run':18} {'wall s':>8} {'CPU s':>8} {'img/s':>7} {'orch.':>6} {'CPU orch.':>9} {'peak MB':>8} {'worker MB':>9} {'files/img':>9} {'load':>5}")
    for row in rows:
        for name, r in row["runs"].items():
            share = f"{r['orchestration_share']:.0%}" if "orchestration_share" in r else "-"
            cpu_share = f"{r['orchestration_cpu_share']:.0%}" if "orchestration_cpu_share" in r else "-"
            print(f"{row['path']:12} {row['images']:>6} {name:18} {r['wall_s']:>8} {r['cpu_s']:>8} {r['images_per_s']:>7} {share:>6} {cpu_share:>9} "
                  f"{r['peak_mb']:>8} {r['worker_peak_mb'] or '-':>9} {r['files_per_image']:>9} {r['load_before']:>5}")


def benchmark_env() -> dict[str, str]:
    """The commands' environment: this checkout importable, the default (shared local) Prefect server."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("PREFECT_API_URL", None)  # the temporary-server runs start their own
    return env


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--plain":
        plain_walk(sys.argv[3], sys.argv[2])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--memory":
        memory_loop(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000], help="dataset sizes for the superpixels stage")
    parser.add_argument("--graphnet-sizes", type=int, nargs="*", default=[250, 1000], help="dataset sizes for the whole GraphNet path")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds per size; each row is the median round")
    parser.add_argument("--servers", nargs="+", choices=["temporary", "long-lived", "stack"], default=["temporary", "long-lived"],
                        help="temporary: the default (the shared local server, threads); stack: `wsss stack up` under DATA/stack")
    parser.add_argument("--dask-workers", type=int, default=2, help="the stack's Dask workers")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "wsss-scale", help="datasets and workspaces (kept between runs)")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    env = benchmark_env()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the long-lived server on kill too
    server = None
    stack = None
    rows = []
    try:
        if "stack" in args.servers:
            stack = Stack(args.data / "stack", args.dask_workers)
        if "long-lived" in args.servers:
            home = args.data / "prefect-home"
            home.mkdir(exist_ok=True)
            server = LongLivedServer(home, env)
        # Small sizes of both paths first; the results are saved after every size.
        plan = [("superpixels", size) for size in args.sizes] + [("graphnet", size) for size in args.graphnet_sizes]
        plan.sort(key=lambda item: (sorted(args.sizes if item[0] == "superpixels" else args.graphnet_sizes).index(item[1]), item[0] != "superpixels"))
        for path, size in plan:
            rows.append(run_size(path, size, args.workers, args.servers, args.data, env, server, args.repeats, stack))
            save(rows, args.out)
    finally:
        if server is not None:
            server.stop()
        if stack is not None:
            stack.stop()
    print_table(rows)
    for path, ratios in growth(rows).items():
        print(f"{path}: growth {ratios}")
    print(f"wrote {args.out}")


def save(rows: list[dict[str, Any]], out: Path) -> None:
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "image_size": [256, 192],
        "engine": "threads",
        "rows": rows,
        "growth": growth(rows),
        "command": " ".join(["benchmarks/scale.py", *sys.argv[1:]]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
