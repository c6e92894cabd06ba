"""Flow: read a dataset into a workspace."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.common import Execution, StageSummary, engine_session, run_stage_batches
from tasks.ingest import ingest_batch
from wsss_core.config import config_hash, config_to_dict
from wsss_core.data.image_io import ReadOptions
from wsss_core.data.readers import open_reader
from wsss_core.store import INGEST_STAGE, Workspace


def run_ingest(
    root: str,
    workspace: str,
    format: str,
    split: str,
    scribbles_dir: str | None,
    image_dir: str | None,
    options: ReadOptions,
    execution: Execution,
) -> StageSummary:
    reader = open_reader(
        Path(root), format=format, split=split, scribbles_dir=scribbles_dir, image_dir=image_dir, options=options
    )
    image_ids = reader.image_ids()  # DatasetError for a missing or empty split list
    ws = Workspace(workspace)
    description = reader.describe()
    ws.bind_dataset(description)  # WorkspaceError when the workspace holds another dataset
    # The split is not part of the key: adding a second split keeps the first.
    config = {
        "dataset": {k: v for k, v in description.items() if k != "split"},
        "scribbles_dir": scribbles_dir,
        "options": config_to_dict(options),
    }
    key = config_hash(config)
    ws.begin_stage(INGEST_STAGE, key, config)
    with engine_session(execution) as runner:
        return run_stage_batches(
            runner, ingest_batch, ws, INGEST_STAGE, key, image_ids, {"reader": reader}, execution
        )


@flow(name="ingest")
def ingest_flow(
    root: str,
    workspace: str,
    format: str = "voc",
    split: str = "train",
    scribbles_dir: str | None = None,
    image_dir: str | None = None,
    options: ReadOptions = ReadOptions(),
    execution: Execution = Execution(),
) -> StageSummary:
    """Ingest every image of a split; images already ingested are skipped."""
    return run_ingest(root, workspace, format, split, scribbles_dir, image_dir, options, execution)
