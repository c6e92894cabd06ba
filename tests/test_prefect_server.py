"""One Prefect server for many commands: with PREFECT_API_URL set, a command's flow run is on it.

A `prefect server start` (tests/deploy_helpers.py) stands for the server a user keeps running
in another terminal (docs/orchestration.md, "At scale"); the command runs in a subprocess, as a
user runs it.
Which commands load no Prefect at all: tests/flows/test_orchestration.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from tests.deploy_helpers import REPO_ROOT, prefect_server
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

COMMAND_TIMEOUT_S = 300.0


def api_post(api_url: str, path: str) -> list[dict]:
    request = urllib.request.Request(f"{api_url}/{path}", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_a_command_reports_its_flow_run_to_the_server_in_prefect_api_url(tmp_path):
    root = generate_dataset(tmp_path / "data", SyntheticConfig(n_images=4, width=48, height=40, seed=5))
    command = [sys.executable, "-m", "cli", "ingest", "--root", str(root), "--workspace", str(tmp_path / "ws"), "--no-progress"]
    with prefect_server(tmp_path / "server") as server:
        env = server.env({"PYTHONPATH": str(REPO_ROOT)})  # PREFECT_API_URL = this server's; logging at INFO
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "temporary server" not in result.stderr.lower()  # Prefect announces one at INFO
        flows = {flow["id"]: flow["name"] for flow in api_post(server.api_url, "flows/filter")}
        runs = api_post(server.api_url, "flow_runs/filter")
    assert [(flows.get(run["flow_id"]), run["state_type"]) for run in runs] == [("ingest", "COMPLETED")], runs
