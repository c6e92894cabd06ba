"""prefect.yaml's deployments run for real: a temporary Prefect server, `prefect deploy --all`,
a process worker, and flow runs of the `ingest` and `superpixels` deployments to COMPLETED.

Paths in the parameters are absolute: a flow run's working directory is WSSS_HOME (the pull
step's `set_working_directory`), so a relative workspace would land inside the checkout.
"""

from __future__ import annotations

import pytest

from tests.deploy_helpers import REPO_ROOT
from wsss_core.config import config_to_dict
from wsss_core.store import Workspace
from wsss_core.superpixels import SuperpixelConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("deploy-data"), SyntheticConfig(n_images=6, width=64, height=48))
    train_ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert train_ids
    return root, train_ids


def test_deploy_registers_both_deployments_with_the_checkout_as_working_directory(deployed_project):
    with deployed_project.client() as client:
        for name in ("ingest/ingest", "superpixels/superpixels"):
            deployment = client.read_deployment_by_name(name)
            assert deployment.work_pool_name == "wsss-local"
            # `prefect deploy` fills in {{ $WSSS_HOME }} from its own environment: the worker needs none.
            assert deployment.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
            ]
            assert deployment.schedules and not any(schedule.active for schedule in deployment.schedules)


def test_ingest_then_superpixels_deployments_complete_with_outputs_in_the_workspace(
    deployed_project, dataset, tmp_path
):
    root, train_ids = dataset
    workspace = tmp_path / "ws"

    ingest = deployed_project.run("ingest/ingest", {"root": str(root), "workspace": str(workspace)})
    deployed_project.assert_completed(ingest)
    ws = Workspace(workspace)
    assert ws.image_ids() == sorted(train_ids)  # the deployment's default split: train

    # A dataclass parameter travels as a JSON object; the flow run turns it back into the
    # dataclass (unset fields take their defaults).
    superpixels = deployed_project.run(
        "superpixels/superpixels", {"workspace": str(workspace), "config": {"compactness": 30}}
    )
    deployed_project.assert_completed(superpixels)
    assert ws.done_ids("superpixels") == set(train_ids)
    assert ws.stage_meta("superpixels")["config"] == config_to_dict(SuperpixelConfig(compactness=30))
    assert not ws.failures("superpixels")


def test_the_server_refuses_parameters_outside_the_deployments_schema(deployed_project):
    from prefect.exceptions import PrefectHTTPStatusError

    with deployed_project.client() as client:
        deployment = client.read_deployment_by_name("superpixels/superpixels")
        for bad in ({"method": "watershed"}, "compactness=30"):
            with pytest.raises(PrefectHTTPStatusError, match="Validation failed for field 'config"):
                client.create_flow_run_from_deployment(deployment.id, parameters={"workspace": "/x", "config": bad})


def test_a_misspelt_config_field_fails_the_run_instead_of_being_ignored(deployed_project, tmp_path):
    # The deployment's schema allows extra keys, so the server accepts the run; the flow's own
    # validation (pydantic, from the signature) then refuses it before any work starts.
    flow_run = deployed_project.run(
        "superpixels/superpixels", {"workspace": str(tmp_path / "never"), "config": {"compactnes": 30}}
    )
    assert flow_run.state.is_failed(), f"{flow_run.state_name}\n{deployed_project.flow_run_logs(flow_run)}"
    assert "compactnes" in deployed_project.flow_run_logs(flow_run)
    assert not (tmp_path / "never").exists()
