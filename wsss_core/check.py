"""`wsss check`: read back every stored array of every done image; repair what cannot be read.

A (stage, image) marked done promises whole arrays; a truncated or damaged file (disk
trouble, a copy cut short) breaks that promise silently until a later stage trips on
it. The check reads each array of each done (stage, image) in full. An unreadable one,
or a done image with no arrays at all, is repaired as the runner repairs what a stage
trips on (Workspace.invalidate): a failure record of kind "unreadable" in the owning
stage and its marker removed, so the stage's next run recomputes the image.

The workspace's own MLflow store (mlflow.db) is checked too: one that a full disk left
half-created (wsss_core.tracking.half_created) is created again when it holds no run, as the
next tracked run would; one holding runs is reported and left alone.

Not detectable by reading: a missing chunk file reads as the array's fill value, and
zarr does not store chunks that hold only the fill value, so its absence is normal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wsss_core.errors import StoredArrayError, WorkspaceError, WsssError
from wsss_core.runner import UNREADABLE
from wsss_core.store import INGEST_STAGE, Workspace, stage_arrays
from wsss_core.tracking import half_created, open_client, workspace_store

TRACKING_STORE = "mlflow"  # the stage name a Problem of the workspace's MLflow store carries

# Ingested arrays every image has; gt and scribbles exist only where the dataset has them.
REQUIRED_INGEST_ARRAYS = ("images", "boxes", "tags")


@dataclass(frozen=True)
class Problem:
    """One (stage, image) found broken: the file at fault and what is wrong with it."""

    stage: str
    image_id: str
    path: str
    error: str


@dataclass
class CheckReport:
    checked: dict[str, int] = field(default_factory=dict)  # stage -> done images read back
    arrays: int = 0
    problems: list[Problem] = field(default_factory=list)
    tracking_store: Problem | None = None  # the workspace's MLflow store, when it was half-created

    @property
    def repaired(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for problem in self.problems:
            counts[problem.stage] = counts.get(problem.stage, 0) + 1
        return counts


def stored_arrays(ws: Workspace, group: str, image_id: str) -> Iterator[str | None]:
    """The arrays stored one by one under <group>/<image_id> (workspaces from before packs):
    None for the node itself when it is an array, else each array's name inside it (e.g.
    "edges" of graphs/<id>/edges). A node whose zarr.json is unreadable is yielded too:
    reading it names the problem."""
    base = ws.store_path / group / image_id
    for folder, dirs, files in os.walk(base):
        dirs.sort()
        if "zarr.json" not in files:
            continue
        try:
            node_type = json.loads((Path(folder) / "zarr.json").read_text()).get("node_type")
        except (OSError, ValueError, AttributeError):
            node_type = "unknown"
        if node_type != "group":
            relative = Path(folder).relative_to(base).as_posix()
            yield None if relative == "." else relative
            dirs[:] = []  # an array's chunks hold no arrays


def check_image(ws: Workspace, stage: str, image_id: str) -> tuple[int, Problem | None]:
    """Read every array of one done (stage, image). Returns (arrays read, the first problem or None)."""
    listed = ws.image_arrays(stage, image_id)
    if listed is not None:  # its marker says which arrays it has, in packs
        return check_listed(ws, stage, image_id, listed)
    read = 0
    for group in stage_arrays(stage):
        names = list(stored_arrays(ws, group, image_id))
        if not names and (stage != INGEST_STAGE or group in REQUIRED_INGEST_ARRAYS):
            return read, Problem(stage, image_id, str(ws.store_path / group / image_id), "marked done but no array stored")
        for name in names:
            try:
                ws.read_array(group, image_id, name)
            except StoredArrayError as error:
                return read, Problem(stage, image_id, error.path, error.problem)
            except WorkspaceError as error:  # a node that is no array
                return read, Problem(stage, image_id, str(ws.store_path / group / image_id), str(error))
            read += 1
    return read, None


def check_listed(ws: Workspace, stage: str, image_id: str, listed: list[tuple[str, str | None]]) -> tuple[int, Problem | None]:
    """check_image for an image whose marker lists its arrays."""
    groups = {group for group, _ in listed}
    for group in stage_arrays(stage):
        if group not in groups and (stage != INGEST_STAGE or group in REQUIRED_INGEST_ARRAYS):
            return 0, Problem(stage, image_id, ws.marker_file(stage, image_id), f"marked done but no array stored ({group})")
    read = 0
    for group, name in listed:
        try:
            ws.read_array(group, image_id, name)
        except StoredArrayError as error:
            return read, Problem(stage, image_id, error.path, error.problem)
        read += 1
    return read, None


def done_images(ws: Workspace) -> dict[str, list[str]]:
    """stage -> its images marked done under its current key, for the stages that store arrays."""
    return {stage: sorted(ws.done_ids(stage)) for stage in ws.stages() if ws.stores_arrays(stage)}


def check_workspace(
    ws: Workspace,
    on_image: Callable[[str, str], None] | None = None,
    on_problem: Callable[[Problem], None] | None = None,
) -> CheckReport:
    """Read back every done (stage, image) and repair each broken one (see the module docstring).

    on_image(stage, image_id) after each image read; on_problem(problem) after each repair.
    Run it while no stage runs on the workspace: an image being written reads as broken.
    """
    report = CheckReport(tracking_store=check_tracking_store(ws.require()))
    for stage, image_ids in done_images(ws.require()).items():
        report.checked[stage] = len(image_ids)
        for image_id in image_ids:
            read, problem = check_image(ws, stage, image_id)
            report.arrays += read
            if problem is not None:
                ws.invalidate(stage, image_id, UNREADABLE, f"{problem.path}: {problem.error}")
                report.problems.append(problem)
                if on_problem:
                    on_problem(problem)
            if on_image:
                on_image(stage, image_id)
    return report


def check_tracking_store(ws: Workspace) -> Problem | None:
    """The workspace's own MLflow store when a full disk left it half-created: created again
    when it holds no run (Problem.error says so), else left alone (Problem.error says what to do)."""
    uri = workspace_store(ws.path)
    if not half_created(uri):
        return None
    path = str(ws.path / "mlflow.db")
    try:
        open_client(uri)  # creates it again (wsss_core.tracking.recreate_half_created_store)
    except WsssError as error:
        return Problem(TRACKING_STORE, "", path, str(error).removeprefix(f"{path}: "))
    return Problem(TRACKING_STORE, "", path, "MLflow store left half-created (no run in it): created again")
