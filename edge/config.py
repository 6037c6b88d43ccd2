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

[forward.mqtt]          # alerts leave the box: published to an MQTT broker (QoS 1, in order)
host = "broker.local"   # empty: no forwarding
port = 1883
tls = false             # with ca_file, and cert_file + key_file for a client certificate
username = "gate-1"
password_file = "/etc/h2a/mqtt.pass"   # never the password itself in this file
topic_prefix = "h2a/gate-1"            # default h2a/<camera name>

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

from h2a.edge.config_areas import (
    ConfigError,
    Polygon,
    Schedule,
    Zone,
    parse_masks,
    parse_schedules,
    parse_zones,
)
from h2a.edge.events import TypeThresholds
from h2a.runtime.schema import SchemaError, from_data

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - JetPack 6 ships Python 3.10
    import tomli as tomllib


T = TypeVar("T")
#: Characters of the file's sha256 that name a config version (recorded in every alert).
VERSION_CHARS = 12


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
class MqttConfig:
    host: str = ""  # empty: no forwarding
    port: int = field(default=1883, metadata={"min": 1, "max": 65535})
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password_file: str = ""
    client_id: str = ""  # default h2a-<camera name>
    topic_prefix: str = ""  # default h2a/<camera name>
    keepalive: int = field(default=30, metadata={"min": 5})
    reconnect_min: float = field(default=1.0, metadata={"min": 0.1})
    reconnect_max: float = field(default=30.0, metadata={"min": 0.1})


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
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    version: str = "defaults"  # a short hash of the file, recorded in every alert


def _section(cls: type[T], data: Any, where: str) -> T:
    """One table through the shared checker (h2a.runtime.schema): types, bounds, unknown keys."""
    try:
        return from_data(cls, data, where)
    except SchemaError as err:
        raise ConfigError(f"config: {err}") from None


def parse_config(
    text: str, anomalies: list[str], default_enter: dict[str, float], version: str
) -> EdgeConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config: not valid TOML ({err})") from None
    allowed = {
        "camera",
        "detection",
        "defaults",
        "anomaly",
        "alerts",
        "record",
        "forward",
        "mask",
        "zone",
        "schedule",
    }
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
    zones = parse_zones(data.get("zone", []), anomalies)
    return EdgeConfig(
        camera,
        detection,
        thresholds,
        alerts,
        parse_masks(data.get("mask", [])),
        zones,
        parse_schedules(data.get("schedule", []), anomalies, zones),
        _section(RecordConfig, data.get("record", {}), "record"),
        _mqtt(data.get("forward", {})),
        version,
    )


def _mqtt(forward: Any) -> MqttConfig:
    table = _as_table(forward, "forward")
    for key in table:
        if key != "mqtt":
            raise ConfigError(f"config: unknown key 'forward.{key}' (known: mqtt)")
    mqtt = _as_table(table.get("mqtt", {}), "forward.mqtt")
    if "password" in mqtt:
        raise ConfigError(
            "config: 'forward.mqtt.password': keep the password out of this file; name a file "
            "that holds it with password_file (readable by edge-run only)"
        )
    return _section(MqttConfig, mqtt, "forward.mqtt")


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

    def poll(self, force: bool = False) -> tuple[EdgeConfig | None, str | None]:
        """-> (new config, None) after a good change, (None, error) after a bad one, (None, None) else.
        `force` (SIGHUP) reads the file even when its modification time has not changed."""
        stamp = self._mtime()
        if stamp == self._stamp and not (force and self.path is not None):
            return None, None
        self._stamp = stamp
        try:
            self.config = self._load()
        except ConfigError as err:
            return None, str(err)
        return self.config, None
