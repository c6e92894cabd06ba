"""A wsss training checkpoint on disk: written atomically, read back checked.

A checkpoint is a dict with at least "model" (a state dict) and "meta" (what network it
is: kind, backbone, classes); trainings add "optimizer", "epoch", "config" and "history"
(wsss_core.training.checkpoint_state). Both the training loop and the weights decision
(wsss_core.weights: which backbone a fallback checkpoint holds) read them, so they live
here, below both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from wsss_core.data.fingerprints import file_sha256
from wsss_core.errors import BadInputError


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BadInputError(path, "checkpoint not found") from None
    except Exception as exc:
        raise BadInputError(path, f"cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise BadInputError(path, "not a wsss training checkpoint (no 'model' entry)")
    return checkpoint


RESUME_ONLY = ("optimizer",)  # what only a resumed training needs


def drop_resume_state(path: str | Path) -> None:
    """A finished training's checkpoint keeps the model, not what only a resume needs: the
    optimizer's state is as big as the model again (SGD's momentum) or twice (Adam)."""
    state = read_checkpoint(path)
    if any(name in state for name in RESUME_ONLY):
        save_checkpoint(path, {name: value for name, value in state.items() if name not in RESUME_ONLY})


def checkpoint_reference(path: str | Path) -> dict[str, Any]:
    """What a tracked run records of its checkpoint instead of a second copy of it: where the
    workspace keeps it, and its SHA-256 and size, which say it is that file."""
    path = Path(path).resolve()
    return {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
