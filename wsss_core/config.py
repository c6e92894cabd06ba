"""Typed stage configs, their hashes, and overrides by name.

Every stage config is a frozen dataclass whose defaults are the papers' values. The
hash of a config (together with the hashes of the stages it reads from) decides
whether a stored output is still valid. A run config file or a deployment changes any
value by its dotted name (``{"gcn": {"epochs": 50}}`` or ``{"gcn.epochs": 50}``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from wsss_core.errors import UsageError


def _plain(value: Any) -> Any:
    """JSON-able form of a config value: dataclasses become dicts (also inside dicts and lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a (possibly nested) dataclass config, or of a dict holding some."""
    if config is None:
        return {}
    if not (dataclasses.is_dataclass(config) or isinstance(config, Mapping)):
        raise TypeError(f"not a config: {config!r}")
    return json.loads(json.dumps(_plain(config), default=str, sort_keys=isinstance(config, Mapping)))


def config_hash(config: Any, *upstream: str) -> str:
    """Short stable hash of a config and the hashes of the stages it depends on."""
    payload = json.dumps({"config": config_to_dict(config), "upstream": list(upstream)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ids_digest(image_ids: list[str]) -> str:
    """Short hash of a set of image ids (a training set's identity in a stage key)."""
    return hashlib.sha256("\n".join(sorted(image_ids)).encode()).hexdigest()[:12]


def nest_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """{"gcn.epochs": 5, "crf": {"iterations": 3}} -> {"gcn": {"epochs": 5}, "crf": {"iterations": 3}}."""
    nested: dict[str, Any] = {}
    for name, value in overrides.items():
        *parents, leaf = str(name).split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf].update(nest_dotted(value))
        else:
            node[leaf] = nest_dotted(value) if isinstance(value, Mapping) else value
    return nested


def apply_overrides(config: Any, overrides: Mapping[str, Any] | None, where: str = "config") -> Any:
    """A copy of a dataclass config with the named values changed (nested dicts or dotted names).

    Values are converted to the field's type where that is unambiguous (lists to tuples,
    ints to floats, dicts to dataclasses). An unknown name raises UsageError listing the
    valid names at that level.
    """
    if not overrides:
        return config
    if not dataclasses.is_dataclass(config):
        raise UsageError(f"{where}: cannot override {sorted(overrides)} of a plain value")
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for name, value in nest_dotted(overrides).items():
        if name not in fields:
            raise UsageError(f"{where}: no setting {name!r} (valid: {', '.join(fields)})")
        current = getattr(config, name)
        inner = f"{where}.{name}"
        if isinstance(value, Mapping) and (dataclasses.is_dataclass(current) or current is None):
            if current is None:
                current = _dataclass_of(hints[name], inner)()
            changes[name] = apply_overrides(current, value, inner)
        elif isinstance(value, Mapping) and isinstance(current, dict):
            changes[name] = _merge(current, value)
        else:
            changes[name] = _coerce(value, hints[name], inner)
    return dataclasses.replace(config, **changes)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts merged, extra winning (a dict-valued setting, e.g. a path's overrides)."""
    merged = nest_dotted(base)
    for name, value in nest_dotted(extra).items():
        merged[name] = _merge(merged[name], value) if isinstance(value, dict) and isinstance(merged.get(name), dict) else value
    return merged


def _dataclass_of(hint: Any, where: str) -> type:
    for option in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(option):
            return option
    raise UsageError(f"{where}: not a group of settings")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Lists become tuples where the field is a tuple; ints become floats for float fields."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    if value is None and any(typing.get_origin(o) is dict for o in options):
        return {}  # an empty YAML section
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
        if origin in (dict, list) and isinstance(value, origin):
            return value
        if option is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if origin is typing.Literal and value in typing.get_args(option):
            return value
    if any(isinstance(value, o) for o in options if isinstance(o, type)) or not options:
        return value
    if any(typing.get_origin(o) is typing.Literal for o in options):
        choices = [a for o in options if typing.get_origin(o) is typing.Literal for a in typing.get_args(o)]
        raise UsageError(f"{where}: {value!r} is not one of {choices}")
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise UsageError(f"{where}: {value!r} is not a {names}")
