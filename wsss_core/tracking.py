"""MLflow tracking: every training run and evaluation logs its full config and numbers.

By default each workspace has its own SQLite tracking store (`<workspace>/mlflow.db`)
and artifact folder (`<workspace>/mlartifacts`); set MLFLOW_TRACKING_URI to share one
server between workspaces. Compare runs with `mlflow ui --backend-store-uri sqlite:///<workspace>/mlflow.db`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "wsss"
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value


def tracking_uri(workspace_path: str | Path) -> str:
    """MLFLOW_TRACKING_URI when set, else the workspace's own SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(workspace_path).resolve() / 'mlflow.db'}"


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; values cut to MLflow's parameter length limit."""
    flat: dict[str, str] = {}
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{key}."))
        else:
            flat[key] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


@contextmanager
def tracked_run(
    workspace_path: str | Path,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> Iterator[Any]:
    """An MLflow run in the workspace's tracking store with the config logged as params."""
    import mlflow

    uri = tracking_uri(workspace_path)
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        artifacts = (Path(workspace_path).resolve() / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
    else:
        experiment_id = found.experiment_id
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})) as run:
        mlflow.log_params(flatten_params(params))
        yield run
