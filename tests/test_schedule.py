"""A schedule fires by itself: the `run` deployment of prefect.yaml, deployed with a short
interval schedule, runs twice on a process worker without anyone triggering a run, and the
second run works on the dataset as it is after a change.

Issue 27: with SQLAlchemy 2.1 under Prefect 3.8 the server's scheduler service failed every
minute, so a schedule never created a run; test_deployments.py triggers its runs by hand and
could not see it (constraints.txt pins SQLAlchemy 2.0).

Between the two scheduled runs the dataset changes (benchmarks/dataset_changes.py: a scribble
fixed, an image replaced, an id removed from train.txt, two images added). A workspace is a
cache of what a clean run of the dataset as it is now gives (DESIGN.md, "Data that changes"):
after the second run every per-image array of every listed image must be byte-identical to a
clean run's, and the removed id must not be among the workspace's images.

Timeline (~60 s here): server, `prefect deploy --name run --interval 15 --params ...` and a
worker (~25 s); the first run at the schedule's next slot; the schedule is paused while it
runs (so the next slot cannot start a run on the old data); the dataset changes, a clean
`wsss run` of it starts beside, the schedule is resumed, and the next slot's run is the second.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone

import pytest

from benchmarks.dataset_changes import array_differences, change_dataset
from tests.deploy_helpers import (
    FAST_SCHEDULER_ENV,
    REPO_ROOT,
    RUN_TIMEOUT_S,
    DeployedProject,
    ManagedProcess,
    deployed_project,
)
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset
from wsss_core.store import Workspace

pytestmark = pytest.mark.slow

INTERVAL_S = 15  # short, so two slots pass in a test; a run here takes ~10 s, and the schedule is paused meanwhile
# A slot is at most one interval away; the rest is the scheduler's pass (1 s), the worker's poll
# (1 s) and a loaded machine.
SLOT_TIMEOUT_S = INTERVAL_S + 45.0

# The smallest `run`: the GraphNet scribbles path on its offline preset (no CNN weights to look
# for), no segmentation round, no evaluation, no MLflow.
RUN_CONFIG = {
    "ingest": {"splits": ["train"]},  # root: the test's dataset
    "paths": ["graphnet-scribbles"],
    "graphnet": {"preset": "offline", "overrides": {"gcn": {"pretrain_epochs": 10}}},
    "segmentation": {"rounds": 0},
    "evaluate": False,
    "mlflow": False,
    "execution": {"progress": False},
}


def assert_created_by_schedule(run, deployment, schedule, parameters) -> None:
    """The run is the schedule's: what the scheduler service writes on the runs it creates."""
    label = f"flow run {run.name!r}"
    assert run.auto_scheduled, f"{label} was not auto-scheduled (created by {run.created_by})"
    assert run.created_by is not None and run.created_by.type == "SCHEDULE" and run.created_by.id == schedule.id, (
        f"{label} was created by {run.created_by}, not by schedule {schedule.id}"
    )
    assert (run.idempotency_key or "").startswith(f"scheduled {deployment.id} {schedule.id} "), run.idempotency_key
    assert "auto-scheduled" in run.tags, run.tags
    slots = (run.expected_start_time - schedule.schedule.anchor_date).total_seconds() / INTERVAL_S
    assert abs(slots - round(slots)) < 1e-3, (
        f"{label} expected at {run.expected_start_time}, not on the schedule's {INTERVAL_S} s grid "
        f"from {schedule.schedule.anchor_date}"
    )
    assert run.parameters == parameters, run.parameters


def start_clean_run(project: DeployedProject, workspace, config_file, directory) -> ManagedProcess:
    """`wsss run` of the changed dataset into a new workspace, as a user runs it, against the test's
    server (no temporary server of its own)."""
    return ManagedProcess.start(
        "wsss run (clean)",
        [sys.executable, "-m", "cli", "run", "--workspace", str(workspace), "--config", str(config_file)],
        project.server.env({"PYTHONPATH": str(REPO_ROOT)}),
        cwd=directory,
        log_path=directory / "clean-run.log",
    )


def test_an_interval_schedule_runs_the_pipeline_twice_and_the_second_run_sees_the_changed_dataset(tmp_path):
    root = generate_dataset(tmp_path / "data", SyntheticConfig(n_images=6, width=64, height=48))
    train_before = sorted((root / "ImageSets" / "Segmentation" / "train.txt").read_text().split())
    config_file = tmp_path / "run.yaml"
    config_file.write_text(json.dumps({**RUN_CONFIG, "ingest": {**RUN_CONFIG["ingest"], "root": str(root)}}, indent=2))
    scheduled_ws, clean_ws = tmp_path / "ws-scheduled", tmp_path / "ws-clean"
    # settings: None replaces prefect.yaml's (its nightly example's dataset); the file says it all.
    parameters = {"workspace": str(scheduled_ws), "config_file": str(config_file), "settings": None}
    deploy = ("--name", "run", "--interval", str(INTERVAL_S), "--params", json.dumps(parameters))

    with deployed_project(tmp_path / "prefect", server_env=FAST_SCHEDULER_ENV, deploy=deploy) as project:
        deployment = project.deployment("run/run")
        intervals = [s for s in deployment.schedules if getattr(s.schedule, "interval", None) is not None]
        assert len(intervals) == 1 and intervals[0].active, deployment.schedules
        schedule = intervals[0]
        assert schedule.schedule.interval == timedelta(seconds=INTERVAL_S)
        # prefect.yaml's nightly cron is still there, still inactive
        assert [s.active for s in deployment.schedules if s is not schedule] == [False]

        first = project.wait_for_scheduled_run(deployment, schedule, timeout=SLOT_TIMEOUT_S)
        project.pause_schedule(deployment, schedule)  # no second run on the old data
        first = project.wait(first.id, "the first scheduled run")
        project.assert_completed(first)
        assert Workspace(scheduled_ws).image_ids() == train_before

        changed_at = datetime.now(timezone.utc)
        change = change_dataset(root)
        clean = start_clean_run(project, clean_ws, config_file, tmp_path)
        try:
            project.resume_schedule(deployment, schedule)
            second = project.wait_for_scheduled_run(deployment, schedule, created_after=changed_at, timeout=SLOT_TIMEOUT_S)
            project.pause_schedule(deployment, schedule)  # no third run writing while the workspaces are compared
            second = project.wait(second.id, "the second scheduled run")
            project.assert_completed(second)
            exit_code = clean.wait(RUN_TIMEOUT_S)
        finally:
            clean.stop()
        assert exit_code == 0, f"the clean `wsss run` exited with {exit_code}\n{clean.tail()}"
        started = [run for run in project.deployment_runs(deployment) if not run.state.is_scheduled()]
        assert [run.id for run in started] == [first.id, second.id], (
            "the deployment ran other runs than the schedule's two:\n"
            + "\n".join(f"  {run.name}: {run.state_name}, created by {run.created_by}" for run in started)
        )

    # Both runs are the schedule's, the second created and started after the change.
    for run in (first, second):
        assert_created_by_schedule(run, deployment, schedule, parameters)
    assert first.end_time < changed_at < second.created < second.start_time, (first.end_time, changed_at, second.created, second.start_time)
    assert second.expected_start_time > first.expected_start_time

    # The second run's workspace is what a clean run of the changed dataset gives.
    scheduled, reference = Workspace(scheduled_ws), Workspace(clean_ws)
    assert reference.image_ids() == change["ids"], "the clean run did not see the changed dataset"
    assert reference.stages() == scheduled.stages()
    problems = []
    if change["removed"] in scheduled.image_ids():
        problems.append(
            f"{change['removed']} was removed from train.txt but is still among the scheduled workspace's images"
        )
    problems += array_differences(scheduled, reference, change["ids"])
    assert not problems, (
        f"after the change ({change}), the scheduled workspace is not a clean run's:\n" + "\n".join(problems)
    )
