"""The stack's pure parts: its state, its environment lines, its services' command lines, and the
checks made before anything starts. tests/test_stack.py runs the stack itself."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from wsss_core.errors import UsageError
from wsss_core.stack import (
    StackConfig, StackError, check_reachable, environment, export_lines, extra_workers, new_state, services, status,
)


def test_new_state_chooses_distinct_ports_and_a_password():
    state = new_state(StackConfig(dask_workers=3))
    assert len(set(state["ports"].values())) == len(state["ports"]) == 5
    assert len(state["password"]) == 32 and state["dask_workers"] == 3 and state["pool"] == "wsss-local"
    assert new_state(StackConfig())["password"] != state["password"]


def test_export_lines_evaluate_in_a_shell_to_the_stacks_addresses():
    state = new_state(StackConfig())
    script = "\n".join(export_lines(state)) + '\necho "$PREFECT_API_URL|$MLFLOW_TRACKING_URI|$DASK_SCHEDULER_ADDRESS"'
    echoed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    env = environment(state)
    assert echoed == f"{env['PREFECT_API_URL']}|{env['MLFLOW_TRACKING_URI']}|{env['DASK_SCHEDULER_ADDRESS']}"
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://127.0.0.1:{state['ports']['dask']}"


def test_every_service_binds_the_loopback_interface_only(tmp_path):
    if not any(os.path.isfile(f"/usr/lib/postgresql/{v}/bin/initdb") for v in os.listdir("/usr/lib/postgresql")
               if os.path.isdir("/usr/lib/postgresql")):
        pytest.skip("no PostgreSQL")  # tests/test_stack.py fails instead where CI requires it
    state = new_state(StackConfig(dask_workers=2))
    listed = services(tmp_path, state)
    assert [s.name for s in listed] == ["postgres", "prefect-server", "mlflow-server", "dask-scheduler",
                                        "dask-worker-0", "dask-worker-1", "prefect-worker"]
    for service in listed:
        line = shlex.join(service.command)
        assert "0.0.0.0" not in line and ":8787" not in line, line
        if "--host" in service.command:
            assert service.command[service.command.index("--host") + 1] == "127.0.0.1", line
        if "--dashboard-address" in service.command:
            assert service.command[service.command.index("--dashboard-address") + 1].startswith("127.0.0.1:"), line
    assert "listen_addresses=127.0.0.1" in listed[0].command
    # wsss code on the workers and in flow runs is this checkout's, pointed at the stack's servers
    for service in listed[3:]:
        assert service.env["MLFLOW_TRACKING_URI"] == environment(state)["MLFLOW_TRACKING_URI"]
        assert service.env["DASK_SCHEDULER_ADDRESS"] == environment(state)["DASK_SCHEDULER_ADDRESS"]


def test_fewer_workers_asked_for_stops_the_last_ones():
    state = {"dask_workers": 1, "services": {"postgres": {}, "dask-worker-0": {}, "dask-worker-1": {}, "dask-worker-2": {}}}
    assert extra_workers(state) == ["dask-worker-1", "dask-worker-2"]


def test_a_folder_closed_to_the_postgres_user_is_refused_in_one_line():
    import pwd
    import shutil
    import tempfile
    from pathlib import Path

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user")
    base = Path(tempfile.mkdtemp(prefix="wsss-reach-", dir="/tmp"))  # pytest's tmp is closed to others
    try:
        (base / "closed" / "stack").mkdir(parents=True)
        base.chmod(0o711)
        (base / "closed").chmod(0o700)
        with pytest.raises(StackError, match=r"user postgres .* cannot reach it: .*/closed is mode 700"):
            check_reachable(base / "closed" / "stack", "postgres")
        (base / "closed").chmod(0o711)
        check_reachable(base / "closed" / "stack", "postgres")
    finally:
        shutil.rmtree(base)


def test_status_of_a_folder_without_a_stack_says_how_to_start_one(tmp_path):
    with pytest.raises(UsageError, match="no stack here.*wsss stack up --dir"):
        status(tmp_path)


def test_the_crash_automation_waits_for_more_than_one_heartbeat():
    from wsss_core.stack import crash_automation

    automation = crash_automation(30, 90)
    trigger = automation["trigger"]
    assert (trigger["posture"], trigger["within"], trigger["after"]) == ("Proactive", 90, ["prefect.flow-run.heartbeat"])
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= set(trigger["expect"])
    assert automation["actions"][0]["state"] == "CRASHED"
    with pytest.raises(UsageError, match="longer than the heartbeat"):
        crash_automation(30, 30)
