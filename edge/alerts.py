"""An alert, the record of one event, and the table it is stored in.

`Alert` is the one definition: the alert store's columns (`alert_columns`), its writes
(`UPSERT_SQL`) and its reads are derived from this dataclass, so they cannot drift apart.
`build_alert` makes the alert of an event from the frame that was captioned. One event is one
row: the row is keyed by the event's `uid` (`h2a.edge.events`), so a re-caption at a new peak
updates its own event's row and never another's.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from h2a.edge.events import Event, new_event_id

if TYPE_CHECKING:
    from h2a.runtime.engine import Detection, Explanation

#: What a field engineer can say of an alert (`edge-alerts label ID true|false`).
LABELS = ("true", "false")


@dataclass
class Alert:
    camera: str
    anomaly: str
    start_time: float
    peak_score: float
    peak_time: float
    what: str
    who: str
    location: str  # the caption's "Where"
    caption: str
    triplets: list[dict[str, Any]]  # subject, action, object, score, subject_box, object_box (frame pixels)
    zones: list[str]
    model_sha256: str
    config_version: str
    end_time: float | None = None
    uid: str = field(default_factory=new_event_id, metadata={"unique": True})  # its event's uid
    snapshot: str | None = None
    snapshot_bytes: int = 0
    created: float = 0.0  # when the row was first committed (set by the store)
    start_position: float | None = None  # seconds into the source: a file's video position
    end_position: float | None = None
    source: str = ""  # what edge-run read: a file's resolved path, a URL, "camera 0"
    label: str | None = None  # a field engineer's verdict, one of LABELS
    label_note: str | None = None
    clip: str | None = None  # the evidence clip (MP4), relative to the store folder
    clip_bytes: int = 0
    # The outbox: every change of a row takes the store's next sequence number; the forwarder sends
    # changes in that order and records the last one the broker acknowledged.
    forward_seq: int = 0
    forwarded_seq: int = 0
    id: int | None = field(default=None, metadata={"primary_key": True})

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


#: Decimals kept in stored triplets: scores to 1e-4, boxes to a tenth of a pixel.
SCORE_DECIMALS = 4
BOX_DECIMALS = 1


def build_alert(
    event: Event,
    detection: Detection,
    explanation: Explanation,
    *,
    camera: str,
    zones: list[str],
    model_sha256: str,
    config_version: str,
    source: str = "",
) -> Alert:
    """The alert of `event` from the frame that was captioned: triplets with boxes in frame
    pixels, the What/Who/Where fields and the caption. Its uid is the event's."""
    triplets = [
        {
            "subject": t.subject,
            "action": t.action,
            "object": t.object,
            "score": round(t.score, SCORE_DECIMALS),
            "subject_box": [round(float(v), BOX_DECIMALS) for v in s],
            "object_box": [round(float(v), BOX_DECIMALS) for v in o],
        }
        for t, (s, o) in zip(detection.triplets, detection.frame_boxes(), strict=True)
    ]
    f = explanation.fields
    return Alert(
        camera=camera,
        anomaly=event.anomaly,
        start_time=event.start,
        peak_score=event.peak_score,
        peak_time=event.peak_time,
        what=f.what,
        who=f.who,
        location=f.where,
        caption=f.total or explanation.text,
        triplets=triplets,
        zones=zones,
        model_sha256=model_sha256,
        config_version=config_version,
        end_time=event.end,
        uid=event.uid,
        start_position=event.start_position,
        end_position=event.end_position,
        source=source,
    )


@dataclass(frozen=True)
class Column:
    name: str
    sql: str  # the column definition after its name
    is_json: bool  # lists and dicts are stored as JSON text


_SQL_TYPES: dict[type, str] = {str: "TEXT", float: "REAL", int: "INTEGER"}


def _column(f: Any, hint: Any) -> Column:
    """One dataclass field -> its SQLite column; `X | None` becomes a nullable column."""
    if f.metadata.get("primary_key"):
        return Column(f.name, "INTEGER PRIMARY KEY AUTOINCREMENT", False)
    args = typing.get_args(hint)
    nullable = isinstance(hint, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if nullable else hint
    origin = typing.get_origin(base) or base
    is_json = origin in (list, dict)
    sql = "TEXT" if is_json else _SQL_TYPES[origin]
    if not nullable:
        sql += " NOT NULL"
    if f.metadata.get("unique"):
        sql += " UNIQUE"
    if isinstance(f.default, str):
        sql += " DEFAULT '" + f.default.replace("'", "''") + "'"  # lets a migration add the column
    elif f.default is not MISSING and f.default is not None:
        sql += f" DEFAULT {f.default!r}"
    return Column(f.name, sql, is_json)


def alert_columns() -> tuple[Column, ...]:
    """The row id first (as a person reading the table expects), then the fields in order."""
    hints = typing.get_type_hints(Alert)
    ordered = sorted(fields(Alert), key=lambda f: not f.metadata.get("primary_key", False))
    return tuple(_column(f, hints[f.name]) for f in ordered)


COLUMNS = alert_columns()
#: What a write stores: every column but the row id, which SQLite assigns.
WRITTEN = tuple(c for c in COLUMNS if c.name != "id")


def create_table_sql() -> str:
    body = ",\n    ".join(f"{c.name} {c.sql}" for c in COLUMNS)
    return (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
        f"CREATE TABLE IF NOT EXISTS alerts (\n    {body}\n);\n"
        "CREATE INDEX IF NOT EXISTS alerts_start ON alerts(start_time);\n"
    )


def _upsert_sql() -> str:
    """Insert a row, or update the row of the same event (uid). The end time is never cleared:
    a late re-caption of a closed event keeps the end its close wrote."""
    names = ", ".join(c.name for c in WRITTEN)
    marks = ", ".join("?" for _ in WRITTEN)
    # a re-caption keeps the end, the verdict and the evidence clip (written once the event ends)
    kept = {"uid", "created", "end_time", "label", "label_note", "clip", "clip_bytes", "forwarded_seq"}
    sets = [f"{c.name} = excluded.{c.name}" for c in WRITTEN if c.name not in kept]
    sets.append("end_time = COALESCE(excluded.end_time, alerts.end_time)")
    return f"INSERT INTO alerts ({names}) VALUES ({marks}) ON CONFLICT(uid) DO UPDATE SET {', '.join(sets)}"


UPSERT_SQL = _upsert_sql()
