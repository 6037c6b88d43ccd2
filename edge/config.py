"""The camera's TOML config: validated on load, every error naming its key, reloadable.

[camera]
name = "gate-1"
fps_cap = 0             # 0 = as fast as frames come
frame_stride = 1        # run detection on every n-th frame
freeze_timeout = 5.0    # a live source with no new frame for this long is reopened
reconnect_min = 1.0     # back-off between reopen attempts grows from this ...
reconnect_max = 30.0    # ... to this

[detection]
triplet_score = 0.1     # minimum action x subject x object score of a reported triplet

[defaults]              # every anomaly type; the bundle's thresholds fill `enter` when absent
exit = 0.35
min_duration = 0.5
cooldown = 10.0
ema = 0.5

[anomaly.shooting]      # per type, overrides [defaults]
enter = 0.4

[alerts]
retention_days = 30
max_disk_mb = 2048
jpeg_quality = 90

[record]                # evidence clips (MP4 beside the alert); edge-run --record turns them on
enabled = false
pre = 5.0               # seconds before the alert
post = 5.0              # seconds after the event ends
max_length = 60.0       # a recording never grows past this (seconds)
fps = 10.0              # frames kept per second
scale = 0.5             # frames are downscaled by this
jpeg_quality = 80       # of the frames kept in memory

[[mask]]                # blanked before detection (a road, a TV screen); points in [0, 1]
points = [[0.0, 0.8], [1.0, 0.8], [1.0, 1.0], [0.0, 1.0]]

[[zone]]                # where alerts may come from: once any zone is set, an event alerts only
name = "entrance"       # when a triplet's subject stands inside a zone that arms its type
points = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
types = ["fighting", "riot"]   # the types this zone arms (default: all; [] = only a label)
enter = 0.6             # optional: the event's score must reach this for an alert from here
min_duration = 1.0      # optional: ... and it must have lasted this long (seconds)

[[schedule]]            # when alerts are armed (local time); with none, always. A disarmed
days = ["mon", "tue", "wed", "thu", "fri"]   # type still scores and is logged, but stores no
from = "18:00"          # alert. Default days: all; a span may pass midnight (22:00 -> 06:00)
to = "07:30"
types = ["fighting"]    # optional: only these types (default all)
zones = ["entrance"]    # optional: only alerts from these zones (default any)
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from h2a.edge.events import TypeThresholds
from h2a.runtime.errors import H2AError
from h2a.runtime.schema import SchemaError, from_data

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - JetPack 6 ships Python 3.10
    import tomli as tomllib


T = TypeVar("T")
#: Characters of the file's sha256 that name a config version (recorded in every alert).
VERSION_CHARS = 12


class ConfigError(H2AError):
    exit_code = 2


NON_NEGATIVE: dict[str, Any] = {"min": 0}


@dataclass(frozen=True)
class CameraConfig:
    name: str = "camera"
    fps_cap: float = field(default=0.0, metadata=NON_NEGATIVE)
    frame_stride: int = field(default=1, metadata={"min": 1})
    freeze_timeout: float = field(default=5.0, metadata=NON_NEGATIVE)
    reconnect_min: float = field(default=1.0, metadata=NON_NEGATIVE)
    reconnect_max: float = field(default=30.0, metadata=NON_NEGATIVE)


@dataclass(frozen=True)
class DetectionConfig:
    # below 0 (the default): the bundle's own triplet threshold
    triplet_score: float = field(default=-1.0, metadata={"min": 0.0, "max": 1.0})


@dataclass(frozen=True)
class AlertConfig:
    retention_days: float = field(default=30.0, metadata=NON_NEGATIVE)
    max_disk_mb: float = field(default=2048.0, metadata=NON_NEGATIVE)
    jpeg_quality: int = field(default=90, metadata={"min": 1, "max": 100})


@dataclass(frozen=True)
class RecordConfig:
    enabled: bool = False
    pre: float = field(default=5.0, metadata=NON_NEGATIVE)
    post: float = field(default=5.0, metadata=NON_NEGATIVE)
    max_length: float = field(default=60.0, metadata={"min": 1.0})
    fps: float = field(default=10.0, metadata={"min": 0.5, "max": 60.0})
    scale: float = field(default=0.5, metadata={"min": 0.1, "max": 1.0})
    jpeg_quality: int = field(default=80, metadata={"min": 1, "max": 100})


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


@dataclass(frozen=True)
class EdgeConfig:
    camera: CameraConfig = field(default_factory=CameraConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    thresholds: dict[str, TypeThresholds] = field(default_factory=dict)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    masks: tuple[Polygon, ...] = ()
    zones: tuple[Zone, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    record: RecordConfig = field(default_factory=RecordConfig)
    version: str = "defaults"  # a short hash of the file, recorded in every alert


def _section(cls: type[T], data: Any, where: str) -> T:
    """One table through the shared checker (h2a.runtime.schema): types, bounds, unknown keys."""
    try:
        return from_data(cls, data, where)
    except SchemaError as err:
        raise ConfigError(f"config: {err}") from None


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


def _masks(items: Any) -> tuple[Polygon, ...]:
    tables = _tables(items, "mask", {"points", "name"}, ("points",))
    return tuple(
        Polygon(str(t.get("name", f"mask{i}")), _points(t["points"], f"mask[{i}]"))
        for i, t in enumerate(tables)
    )


def _zones(items: Any, anomalies: list[str]) -> tuple[Zone, ...]:
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


def _schedules(items: Any, anomalies: list[str], zones: tuple[Zone, ...]) -> tuple[Schedule, ...]:
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


def parse_config(
    text: str, anomalies: list[str], default_enter: dict[str, float], version: str
) -> EdgeConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config: not valid TOML ({err})") from None
    allowed = {"camera", "detection", "defaults", "anomaly", "alerts", "record", "mask", "zone", "schedule"}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"config: unknown section '{key}' (known: {', '.join(sorted(allowed))})")
    camera = _section(CameraConfig, data.get("camera", {}), "camera")
    if camera.reconnect_max < camera.reconnect_min:
        raise ConfigError("config: 'camera.reconnect_max' must not be below 'camera.reconnect_min'")
    defaults = data.get("defaults", {})
    per_type = data.get("anomaly", {})
    if not isinstance(per_type, dict):
        raise ConfigError("config: [anomaly] must be a table of tables, e.g. [anomaly.shooting]")
    for name in per_type:
        if name not in anomalies:
            raise ConfigError(
                f"config: unknown anomaly type 'anomaly.{name}' (this model knows: {', '.join(anomalies)})"
            )
    thresholds = {}
    for name in anomalies:
        merged = {
            "enter": default_enter.get(name, TypeThresholds().enter),
            **_as_table(defaults, "defaults"),
            **_as_table(per_type.get(name, {}), f"anomaly.{name}"),
        }
        where = f"anomaly.{name}" if name in per_type else "defaults"
        th = _section(TypeThresholds, merged, where)
        try:
            th.check(where)
        except ValueError as err:
            raise ConfigError(f"config: {err}") from None
        thresholds[name] = th
    detection = _section(DetectionConfig, data.get("detection", {}), "detection")
    alerts = _section(AlertConfig, data.get("alerts", {}), "alerts")
    zones = _zones(data.get("zone", []), anomalies)
    return EdgeConfig(
        camera,
        detection,
        thresholds,
        alerts,
        _masks(data.get("mask", [])),
        zones,
        _schedules(data.get("schedule", []), anomalies, zones),
        _section(RecordConfig, data.get("record", {}), "record"),
        version,
    )


def _as_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"config: [{where}] must be a table")
    return value


def load_config(path: Path | None, anomalies: list[str], default_enter: dict[str, float]) -> EdgeConfig:
    if path is None:
        return parse_config("", anomalies, default_enter, "defaults")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config: cannot read {path} ({err.strerror})") from None
    return parse_config(
        raw.decode("utf-8", errors="replace"),
        anomalies,
        default_enter,
        hashlib.sha256(raw).hexdigest()[:VERSION_CHARS],
    )


class ConfigWatcher:
    """Reload the config when its file changes; a bad edit is reported and the old config kept."""

    def __init__(
        self,
        path: Path | None,
        anomalies: list[str],
        default_enter: dict[str, float],
        enter_overrides: dict[str, float] | None = None,
    ) -> None:
        """`enter_overrides` (from command-line flags) win over the file, also after a reload."""
        self.path, self.anomalies, self.default_enter = path, anomalies, default_enter
        self.overrides = dict(enter_overrides or {})
        for name in self.overrides:
            if name not in anomalies:
                raise ConfigError(
                    f"--threshold: unknown anomaly type {name!r} (known: {', '.join(anomalies)})"
                )
        self.config = self._load()
        self._stamp = self._mtime()

    def _load(self) -> EdgeConfig:
        config = load_config(self.path, self.anomalies, self.default_enter)
        thresholds = dict(config.thresholds)
        for name, enter in self.overrides.items():
            th = dataclasses.replace(thresholds[name], enter=enter, exit=min(thresholds[name].exit, enter))
            try:
                th.check(f"--threshold {name}")
            except ValueError as err:
                raise ConfigError(str(err)) from None
            thresholds[name] = th
        return dataclasses.replace(config, thresholds=thresholds)

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime_ns if self.path else 0.0
        except OSError:
            return 0.0

    def poll(self) -> tuple[EdgeConfig | None, str | None]:
        """-> (new config, None) after a good change, (None, error) after a bad one, (None, None) else."""
        stamp = self._mtime()
        if stamp == self._stamp:
            return None, None
        self._stamp = stamp
        try:
            self.config = self._load()
        except ConfigError as err:
            return None, str(err)
        return self.config, None
