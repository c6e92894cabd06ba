"""The deployments file names real flows with real parameters."""

import importlib
import inspect
import typing
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_points_at_a_flow_with_those_parameters():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert isinstance(flow, Flow), deployment["name"]
        accepted = set(inspect.signature(flow.fn).parameters)
        parameters = deployment.get("parameters", {})
        assert set(parameters) <= accepted, deployment["name"]
        if "request" in parameters:  # a path's request: every name a field of the flow's request type
            kind = typing.get_type_hints(flow.fn)["request"]
            assert kind.from_dict(parameters["request"]).to_dict().items() >= parameters["request"].items()
        assert deployment["work_pool"]["name"] == "wsss-local"


def test_the_graphnet_deployment_and_the_cli_make_byte_identical_masks(synthetic_root, tmp_path, prefect_harness):
    """A deployment runs its entrypoint with its parameters; the CLI must run the very same pipeline."""
    from prefect.flows import load_flow_from_entrypoint
    from typer.testing import CliRunner

    from cli import app
    from flows.common import Execution
    from flows.ingest import ingest_flow
    from wsss_core.store import Workspace

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "graphnet")
    deployed, by_cli = str(tmp_path / "deployed"), str(tmp_path / "cli")
    for workspace in (deployed, by_cli):
        ingest_flow(root=str(synthetic_root), workspace=workspace, execution=Execution(progress=False))
    flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
    parameters = deployment["parameters"]
    run = flow(**{**parameters, "workspace": deployed, "request": {**parameters["request"], "log_to_mlflow": False}})
    assert run.ok
    result = CliRunner().invoke(app, ["graphnet", "--workspace", by_cli, "--no-progress", "--no-mlflow"])
    assert result.exit_code == 0, result.output
    a, b = Workspace(deployed), Workspace(by_cli)
    assert a.done_ids("pseudo/gcn-scribbles") == b.done_ids("pseudo/gcn-scribbles") == set(a.image_ids())
    for image_id in a.image_ids():
        assert a.read_array("pseudo/gcn-scribbles", image_id).tobytes() == b.read_array("pseudo/gcn-scribbles", image_id).tobytes()
