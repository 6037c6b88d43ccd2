"""The config's areas and times: masks, zones that arm alerts, arming schedules (`[[mask]]`,
`[[zone]]`, `[[schedule]]`), parsed with errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from h2a.runtime.errors import H2AError


class ConfigError(H2AError):
    exit_code = 2


@dataclass(frozen=True)
class Polygon:
    name: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Zone:
    name: str
    points: tuple[tuple[float, float], ...]
    types: tuple[str, ...] | None = None  # None: every type
    enter: float | None = None
    min_duration: float | None = None


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Schedule:
    days: tuple[str, ...]
    start: int  # minutes after local midnight
    end: int  # a span with end <= start passes midnight
    types: tuple[str, ...] | None = None
    zones: tuple[str, ...] | None = None


def _points(value: Any, key: str) -> tuple[tuple[float, float], ...]:
    if (
        not isinstance(value, list)
        or len(value) < 3
        or not all(
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in p)
            for p in value
        )
    ):
        raise ConfigError(f"config: '{key}.points' must be 3 or more [x, y] pairs in [0, 1]")
    return tuple((float(x), float(y)) for x, y in value)


def _tables(items: Any, where: str, known: set[str], required: tuple[str, ...]) -> list[dict[str, Any]]:
    """An array of tables ([[where]]), each checked for unknown and missing keys."""
    if not isinstance(items, list):
        raise ConfigError(f"config: [[{where}]] must be an array of tables")
    for i, item in enumerate(items):
        key = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"config: '{key}' must be a table")
        for name in required:
            if name not in item:
                raise ConfigError(f"config: '{key}.{name}' is missing")
        unknown = sorted(set(item) - known)
        if unknown:
            raise ConfigError(f"config: unknown key '{key}.{unknown[0]}' (known: {', '.join(sorted(known))})")
    return items


def _names(value: Any, key: str, allowed: list[str], what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config: '{key}' must be a list of names")
    for v in value:
        if v not in allowed:
            raise ConfigError(f"config: '{key}' names {what} {v!r} (known: {', '.join(allowed)})")
    return tuple(value)


def _unit(value: Any, key: str, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (high and value > high):
        bound = f"in [0, {high:g}]" if high else "a number, at least 0"
        raise ConfigError(f"config: '{key}' must be {bound}, got {value!r}")
    return float(value)


def parse_masks(items: Any) -> tuple[Polygon, ...]:
    tables = _tables(items, "mask", {"points", "name"}, ("points",))
    return tuple(
        Polygon(str(t.get("name", f"mask{i}")), _points(t["points"], f"mask[{i}]"))
        for i, t in enumerate(tables)
    )


def parse_zones(items: Any, anomalies: list[str]) -> tuple[Zone, ...]:
    tables = _tables(items, "zone", {"points", "name", "types", "enter", "min_duration"}, ("points",))
    out = []
    for i, t in enumerate(tables):
        key = f"zone[{i}]"
        name = t.get("name", f"zone{i}")
        if not isinstance(name, str):
            raise ConfigError(f"config: '{key}.name' must be text")
        out.append(
            Zone(
                name,
                _points(t["points"], key),
                _names(t["types"], f"{key}.types", anomalies, "anomaly type") if "types" in t else None,
                _unit(t["enter"], f"{key}.enter", 1.0) if "enter" in t else None,
                _unit(t["min_duration"], f"{key}.min_duration", None) if "min_duration" in t else None,
            )
        )
    return tuple(out)


def _clock(value: Any, key: str) -> int:
    """'HH:MM' -> minutes after midnight."""
    hours, _, minutes = str(value).partition(":") if isinstance(value, str) else ("", "", "")
    if not (
        hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60 and len(minutes) == 2
    ):
        raise ConfigError(f"config: '{key}' must be a time of day like \"18:30\", got {value!r}")
    return int(hours) * 60 + int(minutes)


def parse_schedules(items: Any, anomalies: list[str], zones: tuple[Zone, ...]) -> tuple[Schedule, ...]:
    tables = _tables(items, "schedule", {"days", "from", "to", "types", "zones"}, ("from", "to"))
    out = []
    for i, t in enumerate(tables):
        key = f"schedule[{i}]"
        out.append(
            Schedule(
                _names(t["days"], f"{key}.days", list(DAYS), "day") if "days" in t else DAYS,
                _clock(t["from"], f"{key}.from"),
                _clock(t["to"], f"{key}.to"),
                _names(t["types"], f"{key}.types", anomalies, "anomaly type") if "types" in t else None,
                _names(t["zones"], f"{key}.zones", [z.name for z in zones], "zone") if "zones" in t else None,
            )
        )
    return tuple(out)
