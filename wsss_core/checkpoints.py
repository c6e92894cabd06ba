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
