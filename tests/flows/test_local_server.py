"""The shared local Prefect server: started by the first command, used by the next, gone when idle.

Commands run in subprocesses, as a user runs them, each with a state directory of its own
test (not the session's shared one), so that the server seen is the one these commands started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from flows.local_server import process_alive as alive
from flows.local_server import MODE_VARIABLE, SERVER_FILE, STATE_VARIABLE, ensure_server, running_server, stop_server
from tests.deploy_helpers import REPO_ROOT
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

COMMAND_TIMEOUT_S = 300.0
IDLE_S = 20.0


def wsss(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def command_env(state, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, "PYTHONPATH": str(REPO_ROOT), STATE_VARIABLE: str(state), "WSSS_SERVER_IDLE_S": str(IDLE_S), **extra}


def flow_runs(api_url: str) -> list[dict]:
    request = urllib.request.Request(f"{api_url}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_the_first_command_starts_the_server_the_next_uses_it_and_it_stops_when_idle(tmp_path):
    root = generate_dataset(tmp_path / "data", SyntheticConfig(n_images=3, width=48, height=40, seed=5))
    state, env = tmp_path / "state", command_env(tmp_path / "state")
    ingest = ("ingest", "--root", str(root), "--no-progress")
    wsss(*ingest, "--workspace", str(tmp_path / "ws1"), env=env)
    server = json.loads((state / SERVER_FILE).read_text())
    assert server["api_url"].startswith("http://127.0.0.1:")
    try:
        second = wsss(*ingest, "--workspace", str(tmp_path / "ws2"), env=env)
        assert "temporary server" not in second.stderr.lower()
        assert json.loads((state / SERVER_FILE).read_text())["pid"] == server["pid"]  # the same server
        assert [run["state_type"] for run in flow_runs(server["api_url"])] == ["COMPLETED", "COMPLETED"]
        deadline = time.monotonic() + IDLE_S + 30
        while alive(server["pid"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not alive(server["pid"]), "the server outlived its idle period"
        assert not (state / SERVER_FILE).exists()
    finally:
        stop_server(state)


def test_prefect_api_url_and_the_temporary_mode_start_no_shared_server(tmp_path):
    root = generate_dataset(tmp_path / "data", SyntheticConfig(n_images=2, width=48, height=40, seed=5))
    state = tmp_path / "state"
    wsss("ingest", "--root", str(root), "--workspace", str(tmp_path / "ws"), "--no-progress",
         env=command_env(state, **{MODE_VARIABLE: "temporary"}))
    assert not (state / SERVER_FILE).exists()
    other = tmp_path / "other"
    url = ensure_server(other, idle_s=120)
    try:
        wsss("ingest", "--root", str(root), "--workspace", str(tmp_path / "ws2"), "--no-progress",
             env=command_env(state, PREFECT_API_URL=url))
        assert not (state / SERVER_FILE).exists()
        assert len(flow_runs(url)) == 1  # the command reported to the server PREFECT_API_URL named
        pid = json.loads((other / SERVER_FILE).read_text())["pid"]
        status = wsss("server", "status", env=command_env(other)).stdout
        assert f"running: pid {pid}, {url}" in status
        ui = url.removesuffix("/api")
        assert f"the Prefect UI (the flow runs of every command): {ui}" in status
        with urllib.request.urlopen(f"{ui}/ui-settings", timeout=30) as response:
            assert json.load(response)["api_url"] == url  # the UI talks to this server
        assert wsss("server", "stop", env=command_env(other)).stdout.strip() == f"stopped (pid {pid})"
        assert not alive(pid) and running_server(other) is None
        assert wsss("server", "status", env=command_env(other)).stdout.startswith("not running")
    finally:
        stop_server(other)
