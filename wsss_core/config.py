"""Typed stage configs and their hashes.

Every stage config is a frozen dataclass whose defaults are the papers' values. The
hash of a config (together with the hashes of the stages it reads from) decides
whether a stored output is still valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a (possibly nested) dataclass config."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config):
        return json.loads(json.dumps(dataclasses.asdict(config), default=str))
    if isinstance(config, dict):
        return json.loads(json.dumps(config, default=str, sort_keys=True))
    raise TypeError(f"not a config: {config!r}")


def config_hash(config: Any, *upstream: str) -> str:
    """Short stable hash of a config and the hashes of the stages it depends on."""
    payload = json.dumps(
        {"config": config_to_dict(config), "upstream": list(upstream)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
