from dataclasses import dataclass, field

import pytest

from wsss_core.config import apply_overrides, config_hash, config_to_dict, ids_digest, nest_dotted
from wsss_core.errors import UsageError


@dataclass(frozen=True)
class Inner:
    size: float = 1.0
    scales: tuple[float, ...] = (1.0, 0.5)
    mode: str = "a"


@dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    optional: Inner | None = None
    epochs: int = 3
    extra: dict = field(default_factory=dict)


def test_overrides_by_nested_or_dotted_name_with_type_conversion():
    changed = apply_overrides(Outer(), {"inner.size": 2, "inner": {"scales": [2, 1]}, "epochs": 5})
    assert changed.inner.size == 2.0 and isinstance(changed.inner.size, float)
    assert changed.inner.scales == (2, 1) and changed.epochs == 5
    assert apply_overrides(Outer(), {"optional": {"mode": "b"}}).optional == Inner(mode="b")
    merged = apply_overrides(Outer(extra={"a": {"b": 1}}), {"extra": {"a.c": 2}})
    assert merged.extra == {"a": {"b": 1, "c": 2}}
    assert apply_overrides(Outer(), None) == Outer()


def test_bad_overrides_say_where_and_what_is_valid():
    with pytest.raises(UsageError, match=r"run.inner: no setting 'sise' \(valid: size, scales, mode\)"):
        apply_overrides(Outer(), {"inner.sise": 1}, "run")
    with pytest.raises(UsageError, match="is not a int"):
        apply_overrides(Outer(), {"epochs": "many"})


def test_nest_dotted_and_hashes():
    assert nest_dotted({"a.b": 1, "a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}
    assert config_to_dict({"x": Inner()}) == {"x": {"size": 1.0, "scales": [1.0, 0.5], "mode": "a"}}
    assert config_hash(Outer()) == config_hash(Outer()) != config_hash(Outer(epochs=4))
    assert ids_digest(["b", "a"]) == ids_digest(["a", "b"]) != ids_digest(["a"])
