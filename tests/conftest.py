"""Shared fixtures: Prefect's test harness and small generated datasets."""

from __future__ import annotations

import os

import flows  # noqa: F401  (sets Prefect's defaults before Prefect loads its settings)
import pytest

# A shell that ran `eval "$(wsss stack up ...)"` would send every test's batches to that cluster.
os.environ.pop("DASK_SCHEDULER_ADDRESS", None)


@pytest.fixture(scope="session", autouse=True)
def shared_server_dir(tmp_path_factory):
    """The commands that tests run in subprocesses share one local Prefect server (as a
    user's do: flows/local_server.py), kept in this session's own state directory and
    stopped when the session ends."""
    from flows.local_server import STATE_VARIABLE, stop_server

    directory = tmp_path_factory.mktemp("wsss-state")
    previous = os.environ.get(STATE_VARIABLE)
    os.environ[STATE_VARIABLE] = str(directory)
    yield directory
    stop_server(directory)
    if previous is None:
        os.environ.pop(STATE_VARIABLE, None)
    else:
        os.environ[STATE_VARIABLE] = previous


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (SQLite) for the whole session, as Prefect's docs advise."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small built-in dataset (VOC layout), generated once per session."""
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(root, SyntheticConfig(n_images=12, width=96, height=72, seed=3))


@pytest.fixture(scope="module")
def deployed_project(tmp_path_factory):
    """prefect.yaml deployed to a temporary Prefect server, with a process worker on its pool.

    Slow (~30 s to set up): a real `prefect server start`, `prefect deploy --all` and
    `prefect worker start`. See tests/deploy_helpers.py; `deployed_project.run(name, parameters)`
    runs a deployment and waits for a final state.
    """
    from tests.deploy_helpers import deployed_project

    with deployed_project(tmp_path_factory.mktemp("prefect-deployments")) as project:
        yield project


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """Pretrained weights cannot be had, whether this machine has a network or not: nothing is
    in torch's hub cache, every download fails as an unreachable host does, and this process
    has not said so yet (wsss_core.weights says it once per process)."""
    import urllib.error

    import torch

    from wsss_core import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "_UNREACHABLE", {})

    def unreachable(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
