"""What the orchestration costs per batch: which task runs carry tags (each tag costs a server
round-trip per task run: Prefect asks for the tag's concurrency slots)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import Task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter

import tasks.affinitynet
import tasks.evaluate
import tasks.graphnet
import tasks.ingest
import tasks.superpixels
from flows.common import Execution
from flows.pipeline import GPU_TAG, batch_task
from flows.ingest import ingest_flow
from flows.superpixels import superpixels_flow
from wsss_core.requests import SuperpixelsRequest
from wsss_core.store import Workspace

TRAININGS = {"train-cam", "train-affinitynet", "gcn-fit"}


def every_task() -> list[Task]:
    modules = (tasks.affinitynet, tasks.evaluate, tasks.graphnet, tasks.ingest, tasks.superpixels)
    return [value for module in modules for value in vars(module).values() if isinstance(value, Task)]


def test_only_trainings_carry_a_tag_of_their_own():
    found = {task.name: task.tags for task in every_task()}
    assert TRAININGS <= found.keys() and len(found) > len(TRAININGS)
    for name, tags in found.items():
        assert tags == ({GPU_TAG} if name in TRAININGS else set()), name


@pytest.mark.parametrize(
    ("device", "execution", "tagged"),
    [
        ("cpu", Execution(), False),
        ("cuda", Execution(), True),
        ("cuda:1", Execution(engine="processes"), True),
        (None, Execution(engine="dask", dask_address="tcp://127.0.0.1:8786"), True),  # the workers' machines decide
        ("cpu", Execution(engine="dask", dask_address="tcp://127.0.0.1:8786"), False),
    ],
)
def test_a_batch_stage_is_tagged_gpu_only_when_it_runs_on_one(device, execution, tagged):
    task = batch_task(tasks.graphnet.gcn_batch, {"device": device, "config": None}, execution)
    assert (GPU_TAG in task.tags) is tagged
    assert task.name == "gcn-batch"


def test_a_stage_without_a_device_is_never_tagged():
    execution = Execution(engine="dask", dask_address="tcp://127.0.0.1:8786")
    assert batch_task(tasks.superpixels.superpixels_batch, {"config": None}, execution).tags == set()


async def _task_run_tags(flow_run_id) -> list[list[str]]:
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), task_run_filter=TaskRunFilter()
        )
    return [sorted(run.tags) for run in runs]


def test_a_cpu_stage_runs_its_batches_untagged(prefect_harness, synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    execution = Execution(batch_size=4, progress=False)
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=execution)
    state = superpixels_flow(workspace=workspace, request=SuperpixelsRequest(preset="offline"), execution=execution, return_state=True)
    tags = asyncio.run(_task_run_tags(state.state_details.flow_run_id))
    assert len(tags) >= 2 and all(t == [] for t in tags), tags


# A command that runs no flow must not load Prefect (let alone start its temporary server,
# ~8-11 s here), and a flow with nothing to do must not load torch (~2-3 s with torchvision):
# the command runs in a process of its own, which then reports which heavy libraries it loaded
# (Zarr too, ~0.2 s: finished images are found by their markers, the stage keys in the root's
# zarr.json read as JSON).
HEAVY = ("prefect", "torch", "torchvision", "skimage", "zarr")
PROBE = f"""
import sys
from cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print("LOADED", *[name for name in {HEAVY!r} if name in sys.modules])
"""


def run_probe(*args: str, api_url: str | None = None) -> set[str]:
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Starting temporary server" not in result.stderr
    last = result.stdout.strip().splitlines()[-1].split()
    assert last[0] == "LOADED", result.stdout[-2000:]
    return set(last[1:])


def test_commands_that_run_no_flow_load_no_prefect(synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=Execution(progress=False))
    for args in (
        ["--help"],
        ["graphnet", "--help"],
        ["status", "--workspace", workspace],
        ["export", "--workspace", workspace, "--stage", "gt", "--out", str(tmp_path / "masks")],
        ["check", "--workspace", workspace, "--no-progress"],
        ["compare", "--workspace", workspace],  # refused (no MLflow store yet), but after its imports
    ):
        assert "prefect" not in run_probe(*args), args
    assert len(list((tmp_path / "masks").glob("*.png"))) == len(Workspace(workspace).image_ids())


def test_the_probe_sees_a_command_that_runs_a_flow(synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=Execution(progress=False))
    import prefect.settings

    api_url = prefect.settings.PREFECT_API_URL.value()  # the harness's: no temporary server of its own
    assert "prefect" in run_probe("superpixels", "--workspace", workspace, "--preset", "offline", "--no-progress", api_url=api_url)


async def _flow_runs(name: str) -> int:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        return len(await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name]))))


def test_a_flow_command_with_nothing_to_do_runs_its_flow_without_loading_torch(synthetic_root, tmp_path):
    # Start-up time (issue 31): the flow still runs and is recorded, but nothing that only
    # computing needs is loaded. (The `auto` preset's "no weights without a network" is
    # decided without torchvision too: tests/wsss_core/test_weights.py.)
    workspace = str(tmp_path / "ws")
    execution = Execution(progress=False)
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=execution)
    superpixels_flow(workspace=workspace, request=SuperpixelsRequest(preset="offline"), execution=execution)
    import prefect.settings

    runs = asyncio.run(_flow_runs("superpixels"))
    loaded = run_probe("superpixels", "--workspace", workspace, "--preset", "offline", "--no-progress",
                       api_url=prefect.settings.PREFECT_API_URL.value())
    assert loaded == {"prefect"}
    assert asyncio.run(_flow_runs("superpixels")) == runs + 1
