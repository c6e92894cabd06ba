"""prefect.yaml's deployments run for real: a temporary Prefect server, `prefect deploy --all`,
a process worker, and a flow run of the whole-pipeline `run` deployment to COMPLETED.

Paths in the parameters are absolute: a flow run's working directory is WSSS_HOME (the pull
step's `set_working_directory`), so a relative workspace would land inside the checkout.
"""

from __future__ import annotations

import pytest

from tests.deploy_helpers import REPO_ROOT
from wsss_core.store import Workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("deploy-data"), SyntheticConfig(n_images=6, width=64, height=48))
    train_ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert train_ids
    return root, train_ids


DEPLOYMENTS = (
    "run/run", "graphnet/graphnet", "affinitynet/affinitynet", "ingest/ingest", "superpixels/superpixels",
    "retry-failed/retry-failed", "segment/segment",
)


def test_deploy_registers_every_deployment_with_the_checkout_as_working_directory(deployed_project):
    with deployed_project.client() as client:
        for name in DEPLOYMENTS:
            deployment = client.read_deployment_by_name(name)
            assert deployment.work_pool_name == "wsss-local"
            # `prefect deploy` fills in {{ $WSSS_HOME }} from its own environment: the worker needs none.
            assert deployment.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
            ]
            assert not any(schedule.active for schedule in deployment.schedules)
        assert client.read_deployment_by_name("run/run").schedules  # the nightly example, inactive


def test_the_run_deployment_ingests_and_runs_the_graphnet_paths_to_completed(deployed_project, dataset, tmp_path):
    root, train_ids = dataset
    workspace = tmp_path / "ws"
    settings = {
        "ingest": {"root": str(root), "splits": ["train"]},
        "paths": ["graphnet-scribbles", "graphnet-boxes"],
        "graphnet": {"overrides": {"gcn": {"pretrain_epochs": 10}}},
        "segmentation": {"overrides": {"train": {"epochs": 1, "crop_size": 48}}},
        "mlflow": False,
        "execution": {"progress": False},
    }
    flow_run = deployed_project.run("run/run", {"workspace": str(workspace), "settings": settings})
    deployed_project.assert_completed(flow_run)
    ws = Workspace(workspace)
    assert ws.image_ids() == sorted(train_ids) and ws.split_ids("train") == sorted(train_ids)
    for stage in ("superpixels", "pseudo/gcn-scribbles", "pseudo/gcn-boxes", "pseudo/box-rectangles",
                  "pseudo/gcn-scribbles/round-1", "pseudo/gcn-boxes/round-1"):  # one segmentation round by default
        assert ws.done_ids(stage) == set(train_ids), stage
    assert (workspace / "reports" / "evaluation-run.json").is_file()


def test_the_server_refuses_parameters_outside_the_deployments_schema(deployed_project):
    from prefect.exceptions import PrefectHTTPStatusError

    with deployed_project.client() as client:
        deployment = client.read_deployment_by_name("superpixels/superpixels")
        with pytest.raises(PrefectHTTPStatusError, match="Validation failed for field 'execution"):
            client.create_flow_run_from_deployment(
                deployment.id, parameters={"workspace": "/x", "execution": {"batch_size": "many"}}
            )
        deployment = client.read_deployment_by_name("graphnet/graphnet")  # a misspelt name in a path's request
        with pytest.raises(PrefectHTTPStatusError, match="Validation failed for field 'request"):
            client.create_flow_run_from_deployment(
                deployment.id, parameters={"workspace": "/x", "request": {"supervison": "boxes"}}
            )


def test_a_misspelt_setting_fails_the_run_instead_of_being_ignored(deployed_project, tmp_path, dataset):
    # Overrides are checked by name before any work starts: a typo names the valid settings.
    root, _ = dataset
    flow_run = deployed_project.run(
        "run/run", {"workspace": str(tmp_path / "never"), "settings": {"graphnet": {"overrides": {"gcn.epoch": 3}}}}
    )
    assert flow_run.state.is_failed(), f"{flow_run.state_name}\n{deployed_project.flow_run_logs(flow_run)}"
    assert "no setting 'epoch'" in deployed_project.logs_containing(flow_run, "no setting 'epoch'")
    assert not (tmp_path / "never").exists()


def test_failed_images_fail_the_run_and_both_retries_redo_only_them(deployed_project, dataset, tmp_path):
    import shutil

    root, train_ids = dataset
    broken = tmp_path / "data"
    shutil.copytree(root, broken)
    jpegs = [broken / "JPEGImages" / f"{image_id}.jpg" for image_id in train_ids[:2]]
    originals = [jpeg.read_bytes() for jpeg in jpegs]
    for jpeg, original in zip(jpegs, originals):
        jpeg.write_bytes(original[:100])  # truncated
    workspace = tmp_path / "ws"
    parameters = {"root": str(broken), "workspace": str(workspace), "split": ["train"], "execution": {"progress": False}}
    flow_run = deployed_project.run("ingest/ingest", parameters)
    # Failed, with the count: what the UI, automations and `prefect flow-run retry` see
    assert flow_run.state.is_failed(), flow_run.state_name
    assert flow_run.state.message.startswith("2 image(s) failed (ingest 2)"), flow_run.state.message
    ws = Workspace(workspace)
    assert ws.image_ids() == sorted(train_ids[2:])
    done_before = {p.name: p.read_text() for p in (workspace / "markers" / "ingest").rglob("*.json")}

    jpegs[0].write_bytes(originals[0])
    retried = deployed_project.retry(flow_run)  # `prefect flow-run retry`: the worker runs it again
    assert retried.state.is_failed() and retried.state.message.startswith("1 image(s) failed (ingest 1)")
    assert ws.image_ids() == sorted(train_ids[:1] + train_ids[2:])
    done_after = {p.name: p.read_text() for p in (workspace / "markers" / "ingest").rglob("*.json")}
    assert {name: done_after[name] for name in done_before} == done_before  # the others were not redone

    jpegs[1].write_bytes(originals[1])
    final = deployed_project.run("retry-failed/retry-failed", {"workspace": str(workspace), "log_to_mlflow": False})
    deployed_project.assert_completed(final)
    assert ws.image_ids() == sorted(train_ids) and not ws.failures("ingest")
