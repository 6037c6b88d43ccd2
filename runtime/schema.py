"""Typed data from parsed JSON or TOML: one checker for the bundle manifest and the camera config.

`from_data(cls, data)` builds the dataclass `cls` from plain dicts and lists, checking every
value against the field's type hint: int, float (an int is accepted), str, bool, `X | None`,
`list[X]`, `tuple[X, ...]`, `dict[str, X]`, nested dataclasses and `Any`. A field's metadata may
bound it (`{"min": 0, "max": 1}`, `{"choices": (...)}`). A missing key without a default, a
mistyped value, a value out of bounds and (unless `unknown="ignore"`) an unknown key each raise
`SchemaError`, whose text names the full key (`decoder.eos_id`, `zone[2].points`), so callers
only add their prefix (`manifest.json:`, `config:`).

Kept in the runtime and on the standard library alone: it runs on the device before anything
is loaded, where a validation library would be one more thing to install.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Unknown = Literal["error", "ignore"]

_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}


class SchemaError(ValueError):
    """`str(err)` is one line that names the key; `key` is that key alone."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(text)
        self.key = key


def _wrong(key: str, problem: str) -> SchemaError:
    return SchemaError(key, f"'{key or 'top level'}' {problem}")


def from_data(cls: type[T], data: Any, where: str = "", unknown: Unknown = "error") -> T:
    """Build dataclass `cls` from `data`; `where` is the key path of `data` ("" at the top)."""
    value: T = _check(cls, data, where, unknown)
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(hint: Any, value: Any, key: str, unknown: Unknown) -> Any:
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass(hint, value, key, unknown)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _check(options[0], value, key, unknown)
        for option in options:
            try:
                return _check(option, value, key, unknown)
            except SchemaError:
                continue
        raise _wrong(key, f"must be one of {', '.join(map(_describe, options))}, got {_type_name(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise _wrong(key, f"must be a list, got {_type_name(value)}")
        return [_check(args[0], v, f"{key}[{i}]", unknown) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _wrong(key, f"must be a list, got {_type_name(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], v, f"{key}[{i}]", unknown) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _wrong(key, f"must hold {len(args)} values, got {len(value)}")
        return tuple(
            _check(a, v, f"{key}[{i}]", unknown) for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(key, f"must be an object, got {_type_name(value)}")
        return {k: _check(args[1], v, _join(key, str(k)), unknown) for k, v in value.items()}
    return _scalar(hint, value, key)


def _describe(hint: Any) -> str:
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong(key, f"must be float, got {_type_name(value)}")
        return float(value)
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise _wrong(key, f"must be {_NAMES[hint]}, got {_type_name(value)}")
        return value
    raise TypeError(f"schema: no check for type {hint!r} (at {key})")  # a programming error


def _dataclass(cls: type, value: Any, key: str, unknown: Unknown) -> Any:
    if not isinstance(value, dict):
        raise _wrong(key, f"must be a table/object, got {_type_name(value)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    if unknown == "error":
        for name in value:
            if name not in known:
                sub = _join(key, str(name))
                raise SchemaError(sub, f"unknown key '{sub}' (known: {', '.join(sorted(known))})")
    values = {}
    for name, f in known.items():
        sub = _join(key, name)
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(sub, f"missing key '{sub}'")
            continue
        checked = _check(hints[name], value[name], sub, unknown)
        _bounds(f, checked, sub)
        values[name] = checked
    return cls(**values)


def _bounds(f: dataclasses.Field[Any], value: Any, key: str) -> None:
    low, high, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
    if value is None:
        return
    if low is not None and value < low:
        raise _wrong(key, f"must be at least {low}, got {value}")
    if high is not None and value > high:
        raise _wrong(key, f"must be at most {high}, got {value}")
    if choices is not None and value not in choices:
        raise _wrong(key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
