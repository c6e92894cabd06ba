"""A workspace's directory and its files besides the arrays: where a workspace may live (a
local or mounted directory, not an object store) and how its small files are written."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from wsss_core.errors import WorkspaceError

# "s3://bucket/ws", also as pathlib leaves it ("s3:/bucket/ws"); two letters at least, so
# that a Windows drive ("C:/") is a path.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$")
# Why a workspace must be a local (or mounted) directory, for the refusal below.
OBJECT_STORE_LIMITS = (
    "markers, records and splits are written atomically by a local rename, MLflow's store is "
    "SQLite in the workspace and checkpoints are local files"
)


def workspace_path(path: str | Path) -> Path:
    """A workspace's directory: a path, or a file:// URL; any other URL (s3://, gs://,
    memory://, ...) is refused with a WorkspaceError naming what needs a local path."""
    match = _URL.match(str(path))
    if match is None:
        return Path(path)
    scheme, rest = match.groups()
    if scheme.lower() == "file":
        return Path("/" + rest)
    raise WorkspaceError(
        f"{scheme}://{rest}: object-storage workspaces are not supported yet ({OBJECT_STORE_LIMITS}); "
        "use a local directory or a mounted file system (e.g. s3fs, gcsfuse, NFS)"
    )


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that readers see either the old file or the whole new one."""
    text = json.dumps(payload, indent=1, default=str).encode()
    # A temp name of this process and thread (no two writers share it; mkstemp's random names
    # cost a lookup each), written in one call and renamed into place.
    tmp = f"{path.parent}/.{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalFiles:
    """A workspace's files besides the arrays (markers, records, splits, models, reports) on a
    local or mounted file system, named by paths relative to the workspace ("markers/x/k/a.json").

    Written whole through a temp file and a rename, so a reader sees the old file or the new one.
    """

    def __init__(self, root: Path):
        self.root = root
        self._base = str(root)

    def show(self, relative: str) -> str:
        """The file as messages name it."""
        return str(self.root / relative)

    def _full(self, relative: str) -> str:
        return os.path.join(self._base, relative)

    def exists(self, relative: str) -> bool:
        return os.path.exists(self._full(relative))

    def is_file(self, relative: str) -> bool:
        return os.path.isfile(self._full(relative))

    def read_text(self, relative: str) -> str:
        with open(self._full(relative)) as handle:
            return handle.read()

    def write_json(self, relative: str, payload: dict[str, Any]) -> None:
        write_json_atomic(self.root / relative, payload)

    def remove(self, relative: str) -> None:
        try:
            os.unlink(self._full(relative))
        except FileNotFoundError:
            pass

    def remove_tree(self, relative: str) -> None:
        shutil.rmtree(self._full(relative), ignore_errors=True)

    def files(self, relative: str) -> list[str]:
        """The names of the plain files in a folder, unsorted ([] when there is no folder)."""
        return [e.name for e in self._entries(relative) if e.is_file()]

    def stamps(self, relative: str) -> dict[str, int]:
        """{name: mtime in ns} of the plain files in a folder ({} when there is no folder)."""
        stamps = {}
        for entry in self._entries(relative):
            try:
                if entry.is_file():
                    stamps[entry.name] = entry.stat().st_mtime_ns
            except FileNotFoundError:  # removed meanwhile
                pass
        return stamps

    def _entries(self, relative: str) -> list[os.DirEntry]:
        try:
            return list(os.scandir(self._full(relative)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def folders(self, relative: str) -> list[str]:
        """The names of the folders in a folder, unsorted ([] when there is no folder)."""
        return [e.name for e in self._entries(relative) if e.is_dir()]
