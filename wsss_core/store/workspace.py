"""Workspace: a dataset run's workspace directory, one object over the store's parts.

Each part is a mixin in a module of its own (the package docstring says which does what),
and all of them work on the three attributes set here: path, store_path and _files. They
call one another through self, so a test may replace one method on Workspace (e.g.
_write_pack) and every part sees it.

A Workspace holds paths only: cheap to create, and to pickle (Dask and process engines send
it to their workers). What a process keeps besides (the packs it opened, the batch being
packed in a thread) lives in wsss_core/store/packs.py, not in the instance.
"""

from __future__ import annotations

from pathlib import Path

from wsss_core.store.arrays import Arrays
from wsss_core.store.files import LocalFiles, workspace_path
from wsss_core.store.locks import Locks
from wsss_core.store.markers import Markers
from wsss_core.store.names import STORE_NAME
from wsss_core.store.packs import Packs
from wsss_core.store.records import Records
from wsss_core.store.splits import Splits
from wsss_core.store.stages import Stages


class Workspace(Stages, Splits, Markers, Records, Packs, Arrays, Locks):
    """A dataset run's workspace directory. Cheap to create and to pickle (holds paths only)."""

    def __init__(self, path: str | Path):
        self.path = workspace_path(path).absolute()  # tasks on a Dask worker start elsewhere
        self.store_path = self.path / STORE_NAME
        self._files = LocalFiles(self.path)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"
