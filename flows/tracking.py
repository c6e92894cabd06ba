"""One MLflow parent run per flow run, nested like the flow runs themselves.

A flow that trains or evaluates opens its run with `flow_run_tracking` and hands the
yielded Tracking to its tasks through its stage rows' `runtime` (not hashed into keys), so
each training opens its nested run under it, on whatever process the task runs. A subflow
(a path of `wsss run`, the evaluation of a path) nests its own parent run under its calling
flow's run: the MLflow tree mirrors Prefect's flow-run tree, e.g.

    run <flow-run name>
      graphnet <flow-run name>          (path graphnet-scribbles)
        gcn-weights/gcn-scribbles       (a training)
      affinitynet <flow-run name>
        train-cam, train-affinitynet
      evaluate <flow-run name>
        pseudo/gcn-scribbles train, pseudo/gcn-scribbles val, pseudo/rw train, ...

With tracking off (log_to_mlflow=False) nothing opens and the flows pass None.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from wsss_core.config import config_to_dict
from wsss_core.store import Workspace
from wsss_core.tracking import GIT_COMMIT_TAG, Tracking, git_commit, open_run, readable_params

# The run of the innermost flow run that is tracking, for its subflows to nest under.
_active: contextvars.ContextVar[Tracking | None] = contextvars.ContextVar("wsss_tracking", default=None)


@lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit of the checkout this package runs from (None when it is no checkout)."""
    return git_commit(Path(__file__).resolve().parents[1])


def flow_run_identity(default_flow: str) -> tuple[str, dict[str, str]]:
    """(run name, tags) of the Prefect flow run in progress: `<flow name> <flow-run name>`."""
    from prefect.runtime import flow_run

    flow_name = flow_run.flow_name or default_flow
    tags = {"prefect.flow_name": flow_name, "prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name}
    name = f"{flow_name} {flow_run.name}" if flow_run.name else flow_name
    return name, {k: str(v) for k, v in tags.items() if v}


def workspace_tags(ws: Workspace) -> dict[str, str]:
    tags = {"workspace": str(ws.path.resolve()), "dataset": str(ws.dataset.get("name") or "")}
    commit = source_commit()
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    return {k: v for k, v in tags.items() if v}


@contextmanager
def flow_run_tracking(
    ws: Workspace,
    enabled: bool,
    flow: str,
    params: Mapping[str, Any] | None = None,
    config: Any = None,
    inherit: Mapping[str, Any] | None = None,
) -> Iterator[Tracking | None]:
    """The parent run of this flow run (nested under the calling flow's run, if any), open for
    the body; yields the Tracking its tasks and subflows log under (None when not enabled).

    params: the flow's readable settings; config: the resolved config, saved as config.json;
    inherit: readable settings every run nested under this one repeats (e.g. preset).
    The run ends FAILED when the body raises.
    """
    if not enabled:
        yield None
        return
    outer = _active.get()
    base = outer if outer is not None and outer.tags.get("workspace") == str(ws.path.resolve()) else None
    base = base or Tracking.for_workspace(ws.path, workspace_tags(ws))
    name, prefect_tags = flow_run_identity(flow)
    with open_run(replace(base, params={}), name, params, {"kind": "flow", **prefect_tags}) as run:
        if config is not None:
            run.log_dict(config_to_dict(config), "config.json")
        tracking = replace(base.under(run.run_id, tags=prefect_tags), params=readable_params(inherit or {}))
        token = _active.set(tracking)
        try:
            yield tracking
        finally:
            _active.reset(token)


def remember_mask_settings(ws: Workspace, settings: Mapping[str, Mapping[str, Any]]) -> None:
    """Record, with each mask stage, the readable settings of the run that made it: its
    evaluation runs log them as params, whichever later flow evaluates it."""
    for stage, values in settings.items():
        ws.note_stage(stage, settings=config_to_dict(dict(values)))


def mask_settings(ws: Workspace, stage: str) -> dict[str, Any]:
    """The settings recorded with a mask stage ({} for one made before they were recorded)."""
    return dict((ws.stage_meta(stage) or {}).get("settings", {}))
