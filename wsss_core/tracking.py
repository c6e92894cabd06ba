"""MLflow tracking: where runs log, what they log (readable params, common metric names), and
runs that end FAILED when they crash.

By default each workspace has its own SQLite tracking store (`<workspace>/mlflow.db`) and
artifact folder (`<workspace>/mlartifacts`); MLFLOW_TRACKING_URI (a server, or one SQLite
file) makes several workspaces log to one store, MLFLOW_EXPERIMENT_NAME another experiment
than "wsss".

Runs are a tree that mirrors the flow runs: one parent run per flow run, nested runs under
it for each training and each evaluated mask set. A `Tracking` says where a run logs and
under which parent; it pickles, so a task in another process (a Dask worker, a process
pool) opens its nested run under the flow's parent. Every run is written through
MlflowClient with an explicit run id, never through MLflow's process-global "active run",
so tasks on threads cannot log into each other's runs.

A workspace's SQLite store: a full disk while MLflow writes it becomes one TrackingStoreError
naming the file (the CLI's one line, exit 2); a store whose creation a full disk stopped
half-way (MLflow's migrations are not transactional on SQLite: every later open failed with
"table ... already exists") is created again on the next open when it holds no run.

Conventions: params are settings a person reads (names as `--set` takes them; no hashes,
no timestamps: keys go in tags); mask quality is `miou` and `iou/<class>` in percent (tag
`metric_unit`), with method, split and round as params of the nested run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wsss_core.errors import TrackingStoreError, WsssError

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "wsss"
METRIC_UNIT = "percent"  # of miou, iou/<class>, pixel_accuracy
_MAX_PARAM_LENGTH = 6000  # MLflow's limits: a parameter value, a tag value, items per log_batch call
_MAX_TAG_LENGTH = 8000
_MAX_PER_BATCH = 100

# Config entries that are no setting a person chooses: hashes, timestamps, digests of image sets.
HIDDEN_PARAMS = frozenset({"key", "stage_key", "time", "images", "refit_of", "upstream"})

# MLflow's own tag names (its UI shows them).
PARENT_RUN_TAG = "mlflow.parentRunId"
GIT_COMMIT_TAG = "mlflow.source.git.commit"


def tracking_uri(workspace_path: str | Path) -> str:
    """MLFLOW_TRACKING_URI when set, else the workspace's own SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or workspace_store(workspace_path)


def workspace_store(workspace_path: str | Path) -> str:
    """The tracking URI of a workspace's own store."""
    return f"sqlite:///{Path(workspace_path).resolve() / 'mlflow.db'}"


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def artifact_location(uri: str, workspace_path: str | Path | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: the workspace's mlartifacts for its own store,
    beside the database file for another SQLite store, else the server's choice (None)."""
    if workspace_path is not None and uri == workspace_store(workspace_path):
        return (Path(workspace_path).resolve() / "mlartifacts").as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def safe_name(name: str) -> str:
    """A metric / param name MLflow accepts (alphanumerics, _ - . / space): other characters become _."""
    return re.sub(r"[^\w.\- /]", "_", str(name)).strip() or "_"


def readable_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The settings of a (nested) config as MLflow params, without hashes and timestamps.

    Names are dotted paths, the names `--set` takes (`gcn.epochs`, `superpixels.compactness`);
    None reads "none" and booleans "true" / "false", as in the config files.
    """
    flat: dict[str, str] = {}
    for name, value in config.items():
        if str(name) in HIDDEN_PARAMS:
            continue
        key = f"{prefix}{safe_name(name)}"
        if isinstance(value, Mapping):
            flat.update(readable_params(value, prefix=f"{key}."))
        else:
            flat[key] = readable_value(value)[:_MAX_PARAM_LENGTH]
    return flat


def readable_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(readable_value(v) for v in value) + "]"
    return str(value)


def mask_metrics(iou: Any, miou: float, class_names: list[str], pixel_accuracy: float | None = None) -> dict[str, float]:
    """`miou`, `iou/<class>` (and `pixel_accuracy`) in percent; classes absent from GT and
    prediction (nan) are left out."""
    metrics = {"miou": 100.0 * miou} if miou == miou else {}
    for name, value in zip(class_names, iou):
        if value is not None and value == value:
            metrics[f"iou/{safe_name(name)}"] = 100.0 * float(value)
    if pixel_accuracy is not None and pixel_accuracy == pixel_accuracy:
        metrics["pixel_accuracy"] = 100.0 * pixel_accuracy
    return metrics


def git_commit(path: str | Path) -> str | None:
    """The commit checked out where `path` lives; None outside a git checkout or without git."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(path), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


@dataclass(frozen=True)
class Tracking:
    """Where and under what a run logs; plain data, so it pickles into any task.

    tags: set on every run opened with it (workspace, dataset, Prefect flow run, git commit);
    params: readable settings every nested run repeats (preset, method), so each run filters
    on them alone.
    """

    uri: str
    experiment: str = DEFAULT_EXPERIMENT
    artifact_location: str | None = None
    parent_run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_workspace(cls, workspace_path: str | Path, tags: Mapping[str, str] | None = None) -> Tracking:
        uri = tracking_uri(workspace_path)
        return cls(uri, experiment_name(), artifact_location(uri, workspace_path), tags=dict(tags or {}))

    def under(self, run_id: str, tags: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None) -> Tracking:
        """The same store with `run_id` as parent; tags and params added to the inherited ones."""
        return replace(
            self, parent_run_id=run_id, tags={**self.tags, **(tags or {})}, params={**self.params, **(params or {})}
        )

    def client(self) -> Any:
        return open_client(self.uri)

    def experiment_id(self, client: Any) -> str:
        """The experiment's id, created on first use (another process may create it at the same time)."""
        from mlflow.exceptions import MlflowException

        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        except MlflowException:
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id


class TrackedRun:
    """One open MLflow run, written through its client and id."""

    def __init__(self, client: Any, run_id: str, name: str):
        self.client, self.run_id, self.name = client, run_id, name

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(safe_name(k), readable_value(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), _MAX_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _MAX_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(safe_name(k), float(v), now, step or 0) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, payload: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(payload), artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)


@contextmanager
def open_run(
    tracking: Tracking,
    name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[TrackedRun]:
    """A run named `name` under tracking's parent, with tracking's tags and params plus these.

    It ends FINISHED, or FAILED when the body raises anything, a KeyboardInterrupt or
    Prefect's termination signal included (the exception goes on). A process killed outright
    leaves its run RUNNING: fail_abandoned_runs closes it when the work is taken up again.
    """
    with store_errors(tracking.uri):
        client = tracking.client()
        run_tags = {**tracking.tags, **{k: str(v) for k, v in (tags or {}).items() if v is not None}}
        if tracking.parent_run_id:
            run_tags[PARENT_RUN_TAG] = tracking.parent_run_id
        created = client.create_run(tracking.experiment_id(client), tags=run_tags, run_name=name)
        run = TrackedRun(client, created.info.run_id, name)
        try:
            run.log_params({**tracking.params, **readable_params(params or {})})
            yield run
        except BaseException:
            client.set_terminated(run.run_id, "FAILED")
            raise
        client.set_terminated(run.run_id, "FINISHED")


def fail_abandoned_runs(tracking: Tracking, tags: Mapping[str, str], reason: str) -> list[str]:
    """Mark FAILED the runs still RUNNING that carry these tags (e.g. a training's stage and key):
    their process was killed. Their parents left RUNNING go FAILED too, unless they are the
    caller's own parents. Returns the ids of the runs closed."""
    with store_errors(tracking.uri):
        return _fail_abandoned_runs(tracking.client(), tracking, tags, reason)


def _fail_abandoned_runs(client: Any, tracking: Tracking, tags: Mapping[str, str], reason: str) -> list[str]:
    found = client.get_experiment_by_name(tracking.experiment)
    if found is None:
        return []
    ours = set(ancestors(client, tracking.parent_run_id))
    closed: list[str] = []
    # Only the status in the filter: tag values (paths) may hold quotes the filter syntax cannot escape.
    for run in client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        if any(run.data.tags.get(k) != v for k, v in tags.items()):
            continue
        for run_id in [run.info.run_id, *ancestors(client, run.data.tags.get(PARENT_RUN_TAG))]:
            if run_id in ours or run_id in closed or client.get_run(run_id).info.status != "RUNNING":
                continue
            client.set_tag(run_id, "abandoned", reason[:_MAX_TAG_LENGTH])
            client.set_terminated(run_id, "FAILED")
            closed.append(run_id)
    return closed


def ancestors(client: Any, run_id: str | None) -> list[str]:
    """run_id and its parents' ids, nearest first."""
    chain: list[str] = []
    while run_id and run_id not in chain:
        chain.append(run_id)
        run_id = client.get_run(run_id).data.tags.get(PARENT_RUN_TAG)
    return chain


# ----------------------------------------------------------------------------- the store's faults


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI (None for a server)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def disk_full(error: BaseException) -> str | None:
    """SQLite's message when ``error`` comes from its SQLITE_FULL ("database or disk is full"), else None.

    Only SQLite's: an OSError of a full disk (an artifact, a checkpoint) names its own file and
    reaches the CLI's one line as it is.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.OperationalError) and "disk is full" in str(current):
            return str(current)
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """SQLite's full disk under the tracking store becomes one TrackingStoreError naming the
    store's file (sqlalchemy's error names no file, and comes wrapped in MLflow's)."""
    try:
        yield
    except WsssError:
        raise
    except Exception as error:
        full = disk_full(error)
        if full is None:
            raise
        where = sqlite_file(uri) or uri
        raise TrackingStoreError(f"{where}: disk full ({full}); free some space and run the command again") from error


def open_client(uri: str) -> Any:
    """MlflowClient of ``uri``; a SQLite store that a full disk left half-created is created again."""
    import mlflow
    import sqlalchemy.exc

    with store_errors(uri):
        try:
            return mlflow.MlflowClient(tracking_uri=uri)  # creates (migrates) a new store's tables
        except sqlalchemy.exc.OperationalError as error:
            path = sqlite_file(uri)
            if path is None or disk_full(error):
                raise
            recreate_half_created_store(uri, path, error)
        return mlflow.MlflowClient(tracking_uri=uri)


def half_created(uri: str) -> bool:
    """Whether a SQLite store's creation (MLflow's migrations, which are not transactional on
    SQLite) stopped half-way: the file is there but some of MLflow's tables are not."""
    path = sqlite_file(uri)
    if path is None or not path.is_file():
        return False
    from mlflow.store.db.utils import _all_tables_exist
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        return not _all_tables_exist(engine)
    finally:
        engine.dispose()


def recreate_half_created_store(uri: str, path: Path, error: BaseException) -> None:
    """Empty a SQLite store MLflow cannot open because its creation stopped half-way, so that MLflow
    creates it again; one that holds runs is left alone: a TrackingStoreError says what to do.

    Under MLflow's own lock for creating the tables (mlflow.store.db.utils._safe_initialize_tables),
    and only when the store is still incomplete there: another process may have just created it.
    """
    from mlflow.store.db.utils import _all_tables_exist, _get_latest_schema_revision, _get_schema_version
    from mlflow.utils.file_utils import ExclusiveFileLock
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    lock = f"{tempfile.gettempdir()}/db_init_lock-{hashlib.md5(str(engine.url).encode(), usedforsecurity=False).hexdigest()}"
    try:
        with ExclusiveFileLock(lock):
            if _all_tables_exist(engine) and _get_schema_version(engine) == _get_latest_schema_revision():
                return  # complete now: made by another process meanwhile
            with engine.connect() as connection:
                tables = set(sqlalchemy.inspect(connection).get_table_names())
                runs = connection.exec_driver_sql("SELECT COUNT(*) FROM runs").scalar() if "runs" in tables else 0
            if runs:
                raise TrackingStoreError(
                    f"{path}: MLflow cannot open this store ({str(error).splitlines()[0]}) and it holds {runs} runs: "
                    "move it away to start a new one"
                ) from error
            # Emptied in place rather than removed: this process's MLflow keeps an engine per URI
            # whose open connections would go on writing into a removed file.
            with engine.begin() as connection:
                for table in tables:
                    connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        engine.dispose()
    logger.warning("%s: MLflow store left half-created (%s), with no run: created again", path, str(error).splitlines()[0])
