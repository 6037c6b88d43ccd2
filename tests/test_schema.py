"""The one checker behind the manifest and the config, on the shapes both use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from h2a.runtime.schema import SchemaError, from_data


@dataclass(frozen=True)
class Inner:
    size: int = field(metadata={"min": 1})
    mode: str = field(default="a", metadata={"choices": ("a", "b")})


@dataclass(frozen=True)
class Outer:
    inner: Inner
    names: list[str]
    weights: dict[str, float]
    points: tuple[tuple[float, float], ...] = ()
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


GOOD: dict[str, Any] = {
    "inner": {"size": 3},
    "names": ["x", "y"],
    "weights": {"x": 1, "y": 0.5},
    "points": [[0, 1], [0.5, 0.5]],
}


def test_builds_nested_values_and_converts_ints_to_floats() -> None:
    got = from_data(Outer, GOOD)
    assert got.inner == Inner(3, "a") and got.names == ["x", "y"]
    assert got.weights == {"x": 1.0, "y": 0.5} and isinstance(got.weights["x"], float)
    assert got.points == ((0.0, 1.0), (0.5, 0.5)) and got.note is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"names": "x"}, "'names' must be a list, got str"),
        ({"names": ["x", 3]}, "'names[1]' must be str, got int"),
        ({"weights": None}, "'weights' must be an object, got null"),
        ({"weights": {"x": "heavy"}}, "'weights.x' must be float, got str"),
        ({"inner": {"size": 0}}, "'inner.size' must be at least 1, got 0"),
        ({"inner": {"size": 2, "mode": "c"}}, "'inner.mode' must be one of a, b, got 'c'"),
        ({"inner": {}}, "missing key 'inner.size'"),
        ({"inner": {"size": 2, "colour": 1}}, "unknown key 'inner.colour' (known: mode, size)"),
        ({"points": [[0, 1, 2]]}, "'points[0]' must hold 2 values, got 3"),
        ({"note": 4}, "'note' must be str, got int"),
    ],
)
def test_each_mistake_names_its_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError) as err:
        from_data(Outer, {**GOOD, **change})
    assert str(err.value) == message


def test_unknown_keys_can_be_ignored_for_forward_compatibility() -> None:
    got = from_data(Outer, {**GOOD, "added_later": 1}, unknown="ignore")
    assert got.inner.size == 3
    with pytest.raises(SchemaError, match="unknown key 'added_later'"):
        from_data(Outer, {**GOOD, "added_later": 1})
