"""Error kinds the pipeline tells apart.

A stage that raises ``BadInputError`` (or any non-I/O exception) for an image gets a
failure record and is not retried; ``TransientError`` and plain ``OSError`` are
treated as passing trouble (disk, network filesystem) and retried by the orchestrator.
"""

from __future__ import annotations


class WsssError(Exception):
    """Base class of the errors wsss raises on purpose."""


class BadInputError(WsssError, ValueError):
    """An input file is unusable. The message names the file and the problem."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetError(WsssError):
    """The dataset as a whole is unusable (empty, missing split list, wrong layout)."""


class WorkspaceError(WsssError):
    """The workspace cannot be used for this request (made by another dataset, missing stage)."""


class TrackingStoreError(WsssError):
    """The MLflow tracking store cannot be written or opened (a full disk, a damaged SQLite file)."""


class TransientError(WsssError, OSError):
    """Passing trouble worth retrying."""


class UsageError(WsssError, ValueError):
    """The request itself is wrong (an unknown name, a bad override): exit 2, nothing ran."""


class StoredArrayError(WorkspaceError):
    """A stored array cannot be read back (a truncated or damaged file in store.zarr).

    stage: the stage that wrote it (its owner, which must recompute it); array: the
    array's group (images, graphs, ...); name: the array inside the image's group (e.g.
    edges), or None; path: the file at fault.
    """

    def __init__(self, stage: str, array: str, image_id: str, name: str | None, path: object, problem: str):
        self.stage, self.array, self.image_id, self.name = stage, array, image_id, name
        self.path = str(path)
        self.problem = problem
        where = f"{array}/{image_id}" + (f"/{name}" if name else "")
        super().__init__(f"{self.path}: stored array {where} (stage {stage}) is unreadable: {problem}")
