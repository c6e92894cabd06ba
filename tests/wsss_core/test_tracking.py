import pickle
from pathlib import Path

import mlflow
import pytest
import sqlalchemy

from wsss_core.errors import TrackingStoreError
from wsss_core.tracking import (
    GIT_COMMIT_TAG,
    PARENT_RUN_TAG,
    Tracking,
    artifact_location,
    fail_abandoned_runs,
    git_commit,
    mask_metrics,
    open_run,
    readable_params,
    recreate_half_created_store,
    sqlite_file,
    tracking_uri,
)


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return Tracking.for_workspace(tmp_path, tags={"workspace": str(tmp_path)})


def test_readable_params_drop_hashes_and_timestamps_and_read_like_config_files():
    config = {
        "gcn": {"epochs": 50, "hidden": [16, 8]}, "crf": True, "weights": None, "key": "0a1b2c3d4e5f",
        "time": 1700000000.0, "images": "abcdef123456", "stage_key": "k", "upstream": {"graphs": "k2"},
        "odd name!": 1,
    }
    assert readable_params(config) == {
        "gcn.epochs": "50", "gcn.hidden": "[16, 8]", "crf": "true", "weights": "none", "odd name_": "1",
    }
    assert len(readable_params({"long": "y" * 10_000})["long"]) == 6000  # MLflow's parameter length limit


def test_mask_metrics_are_percent_with_common_names():
    metrics = mask_metrics([0.5, float("nan"), None, 0.25], 0.375, ["background", "cat", "dog", "potted plant"], 0.9)
    assert metrics == {"miou": 37.5, "iou/background": 50.0, "iou/potted plant": 25.0, "pixel_accuracy": 90.0}


def test_runs_nest_under_a_parent_in_the_workspace_store_with_readable_params(tracking, tmp_path):
    with open_run(tracking, "graphnet happy-run", {"preset": "offline"}, {"kind": "flow"}) as parent:
        child_tracking = tracking.under(parent.run_id, params={"method": "gcn-scribbles"})
        child_tracking = pickle.loads(pickle.dumps(child_tracking))  # what a task on another process gets
        with open_run(child_tracking, "train", {"config": {"epochs": 2}, "stage_key": "abc"}, {"stage": "train"}) as child:
            child.log_metrics({"loss": 0.5}, step=1)
            child.log_metrics({"loss": 0.25}, step=2)
    assert (tmp_path / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(tmp_path))
    stored = client.get_run(child.run_id)
    assert stored.data.params == {"method": "gcn-scribbles", "config.epochs": "2"}
    assert stored.data.tags[PARENT_RUN_TAG] == parent.run_id
    assert stored.data.tags["workspace"] == str(tmp_path) and stored.data.tags["stage"] == "train"
    assert [(m.step, m.value) for m in client.get_metric_history(child.run_id, "loss")] == [(1, 0.5), (2, 0.25)]
    assert stored.info.status == "FINISHED" and client.get_run(parent.run_id).info.status == "FINISHED"
    assert stored.info.artifact_uri.startswith((tmp_path / "mlartifacts").resolve().as_uri())
    assert client.get_experiment(stored.info.experiment_id).name == "wsss"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_run_whose_body_raises_ends_failed(tracking, tmp_path, error):
    with pytest.raises(type(error)):
        with open_run(tracking, "train", {}) as run:
            raise error
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(tmp_path))
    assert client.get_run(run.run_id).info.status == "FAILED"


def test_runs_left_running_by_a_killed_process_are_failed_with_their_parents(tracking, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(tmp_path))
    experiment = tracking.experiment_id(client)
    # what a killed process leaves: a flow run's run and its training's run, both RUNNING
    killed_parent = client.create_run(experiment, tags={"workspace": str(tmp_path)}).info.run_id
    killed = client.create_run(experiment, tags={
        "workspace": str(tmp_path), "stage": "train-cam", "stage_key": "k1", PARENT_RUN_TAG: killed_parent,
    }).info.run_id
    other_key = client.create_run(experiment, tags={"workspace": str(tmp_path), "stage": "train-cam", "stage_key": "k2"}).info.run_id
    with open_run(tracking, "affinitynet next-run") as ours:
        closed = fail_abandoned_runs(tracking.under(ours.run_id), {"stage": "train-cam", "stage_key": "k1"}, "taken up again")
        assert client.get_run(ours.run_id).info.status == "RUNNING"  # never the caller's own parents
    assert set(closed) == {killed, killed_parent}
    assert client.get_run(killed).info.status == "FAILED" and client.get_run(killed).data.tags["abandoned"] == "taken up again"
    assert client.get_run(killed_parent).info.status == "FAILED"
    assert client.get_run(other_key).info.status == "RUNNING"


def test_artifacts_live_beside_the_store():
    assert artifact_location("sqlite:////srv/mlflow/shared.db").endswith("/srv/mlflow/mlartifacts")
    assert artifact_location("http://127.0.0.1:5000") is None


def test_git_commit(tmp_path):
    assert git_commit(tmp_path) is None
    here = git_commit(Path(__file__).parent)
    assert here is None or len(here) == 40  # a source tree without git has none
    assert GIT_COMMIT_TAG == "mlflow.source.git.commit"


def test_a_store_that_holds_runs_is_never_emptied_even_when_mlflow_cannot_open_it(tracking):
    with open_run(tracking, "flow"):
        pass
    path = sqlite_file(tracking.uri)
    engine = sqlalchemy.create_engine(tracking.uri)
    with engine.begin() as connection:  # as a migration stopped half-way would leave it
        connection.exec_driver_sql("DROP TABLE logged_models")
    engine.dispose()
    with pytest.raises(TrackingStoreError, match=f"^{path}: MLflow cannot open this store .* holds 1 runs: move it away"):
        recreate_half_created_store(tracking.uri, path, RuntimeError("table logged_models already exists"))
    engine = sqlalchemy.create_engine(tracking.uri)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT COUNT(*) FROM runs").scalar() == 1
    engine.dispose()
