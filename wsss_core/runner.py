"""The per-image loop every batched stage shares (orchestrator-free).

For each image of a batch: skip it when its marker for the stage's key exists, else
run the step (which writes the image's arrays); when the batch ends, its images' arrays
are written as packs, then their markers (Workspace.packing). A step that
raises is recorded as a failure of that image only; its neighbours go on. A step that
finds an input array of an earlier stage unreadable (StoredArrayError) also makes that
stage's image not done (record + marker removed), so its next run recomputes it. I/O errors
(OSError that is not a bad input) are collected as transient: the caller may retry
the batch, and the retry redoes only those images.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from wsss_core.errors import BadInputError, StoredArrayError
from wsss_core.store import Workspace

logger = logging.getLogger(__name__)

# The kind of failure record of a stored array that cannot be read back.
UNREADABLE = "unreadable"

# A step computes and writes one image's outputs; it may return warnings to record.
Step = Callable[[str], "list[str] | None"]


@dataclass
class BatchReport:
    stage: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    transient: dict[str, str] = field(default_factory=dict)

    def merge(self, other: BatchReport) -> BatchReport:
        self.done += other.done
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.transient.update(other.transient)
        return self


class TransientBatchError(OSError):
    """Some images of a batch hit passing I/O trouble; retrying the batch is worth it."""

    def __init__(self, report: BatchReport):
        self.report = report
        ids = ", ".join(sorted(report.transient)[:5])
        super().__init__(f"{len(report.transient)} image(s) of stage {report.stage} hit I/O errors: {ids}")


def is_transient(error: BaseException) -> bool:
    """Passing I/O trouble, as opposed to a bad input that would fail again."""
    return isinstance(error, OSError) and not isinstance(
        error, (BadInputError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    )


def failure_kind(error: BaseException) -> str:
    if isinstance(error, StoredArrayError):
        return UNREADABLE
    return "transient" if is_transient(error) else type(error).__name__


def record_image_failure(workspace: Workspace, stage: str, key: str, image_id: str, error: Exception) -> str:
    """Record one image's failure of a stage; returns the message.

    An input array found unreadable (StoredArrayError) is also recorded in the stage that
    wrote it, whose marker for the image goes: that stage's next run recomputes it.
    """
    message = str(error) or type(error).__name__
    kind = failure_kind(error)
    workspace.record_failure(stage, image_id, kind, message, key)
    if isinstance(error, StoredArrayError) and error.stage != stage:
        workspace.invalidate(error.stage, image_id, kind, message)
    return message


def run_batch(
    workspace: Workspace,
    stage: str,
    key: str,
    image_ids: Sequence[str],
    step: Step,
    *,
    final_attempt: bool = True,
    redo: Collection[str] = (),
) -> BatchReport:
    """Run `step` on each image not yet done. See the module docstring.

    The batch's arrays go into packs (Workspace.packing): an image's marker is written,
    after its pack, when the batch ends (or when its waiting arrays grow past PACK_BYTES),
    so an image counts as done only then. With final_attempt=False, transient errors are
    left unrecorded for a retry; on the final attempt they become failure records like any
    other error. redo: images computed again although done (their inputs changed since).
    """
    report = BatchReport(stage)

    def failed(image_id: str, error: Exception) -> None:
        message = str(error) or type(error).__name__
        if is_transient(error) and not final_attempt:
            report.transient[image_id] = message
            return
        logger.warning("%s: %s failed: %s", stage, image_id, message)
        logger.debug("%s", "".join(traceback.format_exception(error)))
        report.failed[image_id] = record_image_failure(workspace, stage, key, image_id, error)

    with workspace.packing(stage, key) as batch:

        def flush() -> None:
            written, errors = batch.flush()
            for image_id in written:
                workspace.clear_failure(stage, image_id)
                report.done.append(image_id)
            for image_id, error in errors.items():
                failed(image_id, error)

        for image_id in image_ids:
            if image_id not in redo and workspace.is_done(stage, image_id, key):
                report.skipped.append(image_id)
                continue
            try:
                warnings = step(image_id)
            except Exception as error:  # noqa: BLE001 - one image's failure must not stop the batch
                batch.discard(image_id)
                failed(image_id, error)
                continue
            if warnings:
                workspace.record_warnings(stage, image_id, warnings, key)
            workspace.mark_done(stage, image_id, key)  # waits for the batch's flush
            if batch.full:
                flush()
        flush()
    return report


def split_batches(image_ids: Sequence[str], batch_size: int) -> list[list[str]]:
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    return [list(image_ids[i : i + batch_size]) for i in range(0, len(image_ids), batch_size)]


@dataclass
class DatasetReport:
    """What a dataset-level stage (a training, the shared GCN fit) did with its images.

    images: the images it learned from or serves (the runner marks them done under the
    stage's key); failed: images left out, with the reason; trained: False when a
    finished result of the same key was found and reused.
    """

    stage: str
    artifact: str  # the file it wrote (a checkpoint, the shared GCN's weights)
    images: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    trained: bool = False
    resumed_from_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    # Images that joined after the model was fitted and are served by another artifact than
    # `artifact` (the shared GCN fits one for them): image -> artifact file name.
    served_by: dict[str, str] = field(default_factory=dict)
    late_note: str = ""  # how the late images were served, for the summary
