import mlflow

from wsss_core.tracking import flatten_params, tracked_run, tracking_uri


def test_flatten_params():
    assert flatten_params({"a": {"b": 1, "c": {"d": "x"}}, "e": None}) == {"a.b": "1", "a.c.d": "x", "e": "None"}
    assert len(flatten_params({"long": "y" * 10_000})["long"]) == 6000


def test_run_logged_to_the_workspace_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracked_run(tmp_path, "cam-train", {"lr": 0.1, "backbone": {"name": "resnet18"}}, tags={"stage": "cam"}) as run:
        mlflow.log_metric("loss", 0.5, step=0)
        mlflow.log_metric("loss", 0.25, step=1)
    assert (tmp_path / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(tmp_path))
    stored = client.get_run(run.info.run_id)
    assert stored.data.params == {"lr": "0.1", "backbone.name": "resnet18"}
    assert stored.data.tags["stage"] == "cam"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5, 0.25]
    assert stored.info.artifact_uri.startswith((tmp_path / "mlartifacts").resolve().as_uri())
