"""What every training task shares: skip / resume / start a training under its stage key, inside
a nested MLflow run, and the plumbing around it (datasets read from the workspace, image checks).

A training task (a dataset-level row of a pipeline table) builds its DatasetReport, picks its
usable images, then calls

    run_training(workspace, report, key, params, tracking, train)

where train(on_epoch_end) trains and checkpoints every epoch to report.artifact. The checkpoint
has a sidecar `<checkpoint>.json` with the stage key it was trained under and whether it
finished, so the same key finds the finished model (nothing is trained or logged), resumes an
interrupted training from its last epoch, or sets another key's checkpoint aside and starts
afresh. With tracking (None: MLflow off) the training is one nested run under the flow's run:
readable params, per-epoch metrics with the epoch as step (a resumed run logs the epochs
before the interruption too), the training config and a reference to the checkpoint (its path
and SHA-256: the model is stored once, in the workspace) as artifacts; it ends
FAILED when the training raises, and a run left RUNNING by a killed process is marked FAILED
when the training is taken up again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from wsss_core.config import config_to_dict
from wsss_core.errors import BadInputError
from wsss_core.runner import DatasetReport, record_image_failure
from wsss_core.store import Workspace, write_json_atomic
from wsss_core.tracking import Tracking, fail_abandoned_runs, open_run
from wsss_core.checkpoints import checkpoint_reference, drop_resume_state, read_checkpoint

console = Console(stderr=True, soft_wrap=True)  # one line per training epoch

# The tag pair that identifies one training across runs of the flows (with the workspace tag).
TRAINING_TAGS = ("stage", "stage_key")

EpochCallback = Callable[[int, dict[str, float]], None]


def checkpoint_status(path: Path, key: str) -> str:
    """'finished', 'resume' or 'fresh' for the checkpoint at ``path`` and the stage key.

    A sidecar ``<path>.json`` holds the key the checkpoint was trained under. A checkpoint
    of another key (config, inputs or training images changed) is moved to
    ``<name>.previous.pt`` and training starts afresh.
    """
    sidecar = path.with_name(path.name + ".json")
    if not path.exists():
        sidecar.unlink(missing_ok=True)
        return "fresh"
    state = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    if state.get("key") != key:
        os.replace(path, path.with_name(path.stem + ".previous" + path.suffix))
        sidecar.unlink(missing_ok=True)
        return "fresh"
    return "finished" if state.get("finished") else "resume"


def write_checkpoint_status(path: Path, key: str, finished: bool) -> None:
    write_json_atomic(path.with_name(path.name + ".json"), {"key": key, "finished": finished})


def run_training(
    workspace: Workspace,
    report: DatasetReport,
    key: str,
    params: Mapping[str, Any],
    tracking: Tracking | None,
    train: Callable[[EpochCallback], None],
    tags: Mapping[str, str] | None = None,
) -> DatasetReport:
    """Skip / resume / start a training (see the module docstring); the runner marks its images done.

    params: what the run logs as params (training_params), also saved as its config.json
    artifact; tags: extra tags of the run (the stage and its key are always set).
    """
    checkpoint = Path(report.artifact)
    status = checkpoint_status(checkpoint, key)
    if status == "finished":
        report.history = list(read_checkpoint(checkpoint).get("history", []))
        return report
    if status == "resume":
        state = read_checkpoint(checkpoint)
        report.resumed_from_epoch = int(state.get("epoch", 0))
        report.history = list(state.get("history", []))
    write_checkpoint_status(checkpoint, key, finished=False)
    if tracking is None:
        _train(report, train, None)
        drop_resume_state(checkpoint)
    else:
        identity = {"stage": report.stage, "stage_key": key, **{k: v for k, v in tracking.tags.items() if k == "workspace"}}
        fail_abandoned_runs(tracking, identity, f"its process stopped; {report.stage} was taken up again by another run")
        run_tags = {"kind": "training", **identity, "resumed_from_epoch": str(report.resumed_from_epoch), **(tags or {})}
        with open_run(tracking, report.stage, params, run_tags) as run:
            report.mlflow_run_id = run.run_id
            run.log_dict(config_to_dict(dict(params)), "config.json")
            for epoch, metrics in enumerate(report.history):  # epochs of the interrupted run(s)
                run.log_metrics(metrics, step=epoch + 1)
            _train(report, train, run)
            drop_resume_state(checkpoint)
            # the workspace keeps the model; the run says which file it is (stored once)
            run.log_dict(checkpoint_reference(checkpoint), "model/model.json")
    write_checkpoint_status(checkpoint, key, finished=True)
    report.trained = True
    return report


def _train(report: DatasetReport, train: Callable[[EpochCallback], None], run: Any) -> None:
    """Call train with a callback that records, prints and logs each epoch's metrics."""
    started = time.perf_counter()

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal started
        report.history.append(metrics)
        seconds, started = time.perf_counter() - started, time.perf_counter()
        shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        console.print(f"{report.stage} epoch {epoch + 1}: {shown} ({seconds:.0f} s)")
        if run is not None:
            run.log_metrics(metrics, step=epoch + 1)

    train(on_epoch_end)


def training_params(network: str, weights: Mapping[str, Any], n_images: int, config: Any, **extra: Any) -> dict[str, Any]:
    """What a training run logs as params: the network, its training config by field name
    (backbone, epochs, lr, batch_size, crop_size, ...), the weights asked for and used, the
    number of images, and any extra settings (e.g. round, init_from).

    The weights record's note (free text, may name checkpoint hashes) is left out: it goes to
    the run's tags through training_tags.
    """
    fields = config_to_dict(config)
    fields.pop("weights", None)  # the record below says what was asked for and what is used
    record = {k: v for k, v in dict(weights).items() if k != "note"}
    return {"network": network, **fields, "weights": record, "n_images": n_images, **extra}


def training_tags(weights: Mapping[str, Any]) -> dict[str, str]:
    """The weights record's note as a tag (why these weights: a fallback, a checkpoint)."""
    note = weights.get("note")
    return {"weights.note": str(note)} if note else {}


class WorkspaceItems(torch.utils.data.Dataset):
    """(image, target) pairs read from the workspace on demand: ``load(image_id)``."""

    def __init__(self, image_ids: list[str], load: Callable[[str], tuple[np.ndarray, Any]]):
        self.image_ids, self.load = list(image_ids), load

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        return self.load(self.image_ids[index])


def usable_images(
    workspace: Workspace, stage: str, key: str, image_ids: list[str], check: Callable[[str], Any]
) -> tuple[list[str], dict[str, str]]:
    """Images whose ``check`` passes; the others get a failure record of ``stage``."""
    usable, failed = [], {}
    for image_id in image_ids:
        try:
            check(image_id)
        except Exception as error:  # noqa: BLE001 - recorded, the image is left out
            failed[image_id] = record_image_failure(workspace, stage, key, image_id, error)
            continue
        usable.append(image_id)
    return usable, failed


def check_image_shape(workspace: Workspace, image_id: str) -> tuple[int, ...]:
    shape = workspace.array_shape("images", image_id)
    if len(shape) != 3 or shape[2] != 3:
        raise BadInputError(image_id, f"image is {shape}, not HxWx3")
    return shape
