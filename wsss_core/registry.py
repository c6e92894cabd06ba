"""A named-choice registry, like torchgeo's models/api.py or smp's create_model.

Every choice a user makes by name (backbone, supervision, propagation, preset, engine,
pseudo-mask method, pipeline path) is an entry of one registry: the CLI shows the names
in --help, an unknown name gets one error listing the valid ones, and flows and the
evaluation read the same entries instead of testing strings. An entry's target may be a
"module:attribute" string, imported only when used, so listing names stays cheap (the
CLI starts without importing torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from wsss_core.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    target: T
    help: str = ""


class UnknownChoiceError(UsageError):
    def __init__(self, kind: str, name: object, names: tuple[str, ...]):
        self.kind, self.name, self.names = kind, name, names
        super().__init__(f"unknown {kind} {name!r} (choose {', '.join(names)})")


class Registry(Generic[T]):
    """Names -> targets, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, target: T, help: str = "") -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = Entry(name, target, help)
        return target

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownChoiceError(self.kind, name, self.names()) from None

    def get(self, name: str) -> T:
        """The target; a "module:attr.attr" string target is imported now."""
        target = self.entry(name).target
        return resolve_target(target) if isinstance(target, str) and ":" in target else target

    def check(self, name: str) -> str:
        self.entry(name)
        return name

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(list(self._entries.values()))

    def help(self) -> str:
        """"a (what a is), b (...)" for --help texts."""
        return ", ".join(f"{e.name} ({e.help})" if e.help else e.name for e in self)


def resolve_target(target: str) -> Any:
    module_name, _, attributes = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for attribute in attributes.split("."):
        value = getattr(value, attribute)
    return value
