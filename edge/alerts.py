"""The alert store: SQLite in WAL mode is the record of truth; a snapshot JPEG sits beside it.

Durability: a snapshot is written to a temporary file, fsynced and renamed before the row that
names it is committed with `synchronous=FULL`; only then is an alert "written". A power cut or
`kill -9` therefore leaves either no trace of an alert or a complete one; stray temporary files
and unreferenced snapshots are swept on the next open.

One event is one row: the row is keyed by the event's `uid`, so a re-caption at a new peak
updates its own event's row and never another's. The table's columns are derived from the
`Alert` dataclass (`alert_columns`), so the schema, the writes and the reads cannot drift apart.
The schema is versioned in `meta`; a store of an older version gains the columns it lacks when
`edge-run` opens it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from h2a.edge.events import Event, new_event_id
from h2a.runtime.errors import H2AError, InputError

if TYPE_CHECKING:
    from h2a.runtime.engine import Detection, Explanation

SCHEMA_VERSION = 2  # 2: start/end position in the source, the source, field labels, evidence clips
DB_NAME = "alerts.db"
SNAPSHOT_DIR = "snapshots"
CLIP_DIR = "clips"
#: How long a connection waits for a lock held by another process (a reader, `edge-alerts`).
LOCK_TIMEOUT_S = 10.0
#: Deleting the oldest alerts to fit the disk quota goes in batches of this many rows.
QUOTA_DELETE_BATCH = 10


#: What a field engineer can say of an alert (`edge-alerts label ID true|false`).
LABELS = ("true", "false")


class StoreError(H2AError):
    exit_code = 1


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
    kept = {"uid", "created", "end_time", "label", "label_note", "clip", "clip_bytes"}
    sets = [f"{c.name} = excluded.{c.name}" for c in WRITTEN if c.name not in kept]
    sets.append("end_time = COALESCE(excluded.end_time, alerts.end_time)")
    return f"INSERT INTO alerts ({names}) VALUES ({marks}) ON CONFLICT(uid) DO UPDATE SET {', '.join(sets)}"


UPSERT_SQL = _upsert_sql()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AlertStore:
    """One connection, used from one thread (the alert writer); readers open their own."""

    def __init__(self, folder: str | Path, readonly: bool = False, labeller: bool = False) -> None:
        """`readonly`: a reader beside the running writer. `labeller`: writes labels only, beside
        the running writer, so it neither migrates nor sweeps (a sweep could remove a snapshot the
        writer has written and not yet committed)."""
        self.folder = Path(folder)
        self.snapshots = self.folder / SNAPSHOT_DIR
        self.clips = self.folder / CLIP_DIR
        if (readonly or labeller) and not (self.folder / DB_NAME).is_file():
            raise InputError(f"{self.folder}: no alert store here ({DB_NAME} missing)")
        try:
            if not (readonly or labeller):
                self.snapshots.mkdir(parents=True, exist_ok=True)
                self.clips.mkdir(exist_ok=True)
            uri = f"file:{self.folder / DB_NAME}" + ("?mode=ro" if readonly else "")
            self.db = sqlite3.connect(
                uri, uri=True, timeout=LOCK_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self.db.row_factory = sqlite3.Row
            if labeller:
                found = self._version()
                if found != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.folder}: alert store schema version {found}, labels need {SCHEMA_VERSION}; "
                        "run edge-run on it once to upgrade it"
                    )
            elif not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(create_table_sql())
                self._upgrade()
                self.sweep()
            else:
                found = self._version()
                if found is None or found > SCHEMA_VERSION:
                    self._check_version(found)
            self._present = {row["name"] for row in self.db.execute("PRAGMA table_info(alerts)")}
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open the alert store in {self.folder}: {err}") from None

    # ---- schema version ----------------------------------------------------------------------------
    def _version(self) -> int | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else int(row[0])

    def _check_version(self, found: int | None) -> None:
        """Refuse a store this tool cannot read: none, or written by a newer version."""
        if found is None or found > SCHEMA_VERSION:
            raise StoreError(
                f"{self.folder}: alert store schema version {found}, this tool reads up to {SCHEMA_VERSION}; "
                "update this tool"
            )

    def _upgrade(self) -> None:
        """A new store gets the current version; an older one gains its missing columns (each
        has a default or is nullable) and the current version; a newer one is refused."""
        found = self._version()
        if found is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            return
        if found > SCHEMA_VERSION:
            self._check_version(found)
        present = {row["name"] for row in self.db.execute("PRAGMA table_info(alerts)")}
        missing = [c for c in COLUMNS if c.name not in present]
        if not missing and found == SCHEMA_VERSION:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for c in missing:
                self.db.execute(f"ALTER TABLE alerts ADD COLUMN {c.name} {c.sql.replace(' UNIQUE', '')}")
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    # ---- writing ---------------------------------------------------------------------------------
    def write(self, alert: Alert, snapshot_jpeg: bytes | None) -> bool:
        """Insert the alert of a new event, or update the row of its event (same uid) with a new
        caption, peak and snapshot. Fills `alert.id` and `alert.created`; True if a row was
        inserted, False if an existing one was updated."""
        old = self.db.execute(
            "SELECT id, snapshot, created FROM alerts WHERE uid = ?", (alert.uid,)
        ).fetchone()
        name = None
        if snapshot_jpeg is not None:
            name = f"{alert.uid}-{int(time.time() * 1000)}.jpg"
            write_atomic(self.snapshots / name, snapshot_jpeg)
            alert.snapshot, alert.snapshot_bytes = f"{SNAPSHOT_DIR}/{name}", len(snapshot_jpeg)
        alert.created = old["created"] if old is not None else time.time()
        values = [
            json.dumps(getattr(alert, c.name)) if c.is_json else getattr(alert, c.name) for c in WRITTEN
        ]
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(UPSERT_SQL, values)
            alert.id = int(self.db.execute("SELECT id FROM alerts WHERE uid = ?", (alert.uid,)).fetchone()[0])
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if name is not None:
                (self.snapshots / name).unlink(missing_ok=True)
            raise
        if old is not None and old["snapshot"] and name is not None and old["snapshot"] != alert.snapshot:
            (self.folder / old["snapshot"]).unlink(missing_ok=True)
        return old is None

    def close_alert(self, uid: str, end_time: float, end_position: float | None = None) -> bool:
        """Record when the event ended; False if no row holds that event (its caption failed)."""
        cur = self.db.execute(
            "UPDATE alerts SET end_time = ?, end_position = ? WHERE uid = ?", (end_time, end_position, uid)
        )
        return cur.rowcount > 0

    def set_label(self, alert_id: int, label: str | None, note: str | None = None) -> bool:
        """A field engineer's verdict (None clears it); False if there is no such alert."""
        if label is not None and label not in LABELS:
            raise InputError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        cur = self.db.execute(
            "UPDATE alerts SET label = ?, label_note = ? WHERE id = ?", (label, note, alert_id)
        )
        return cur.rowcount > 0

    # ---- housekeeping ----------------------------------------------------------------------------
    def attach_clip(self, uid: str, video: bytes) -> str | None:
        """Store an event's evidence clip (atomically, before the row names it); -> its path, or
        None where the event has no row (its caption failed) and nothing was kept."""
        if self.db.execute("SELECT 1 FROM alerts WHERE uid = ?", (uid,)).fetchone() is None:
            return None
        name = f"{CLIP_DIR}/{uid}.mp4"
        write_atomic(self.folder / name, video)
        self.db.execute("UPDATE alerts SET clip = ?, clip_bytes = ? WHERE uid = ?", (name, len(video), uid))
        return name

    def sweep(self) -> int:
        """Remove temporary files, snapshots and clips that no committed row names (after a crash)."""
        named = {
            path
            for row in self.db.execute("SELECT snapshot, clip FROM alerts")
            for path in (row[0], row[1])
            if path is not None
        }
        removed = 0
        for folder, prefix in ((self.snapshots, SNAPSHOT_DIR), (self.clips, CLIP_DIR)):
            for path in folder.iterdir():
                if f"{prefix}/{path.name}" not in named:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def disk_bytes(self) -> int:
        total = sum(p.stat().st_size for p in self.folder.glob(DB_NAME + "*"))
        media = "SELECT COALESCE(SUM(snapshot_bytes), 0) + COALESCE(SUM(clip_bytes), 0) FROM alerts"
        return total + int(self.db.execute(media).fetchone()[0])

    def enforce_retention(self, max_age_s: float, max_bytes: float, now: float | None = None) -> int:
        """Delete alerts older than `max_age_s`, then the oldest until the store fits `max_bytes`."""
        now = time.time() if now is None else now
        removed = self._delete(
            "SELECT id, snapshot, clip FROM alerts WHERE start_time < ? ORDER BY id", (now - max_age_s,)
        )
        while self.disk_bytes() > max_bytes:
            n = self._delete(
                "SELECT id, snapshot, clip FROM alerts ORDER BY start_time, id LIMIT ?", (QUOTA_DELETE_BATCH,)
            )
            if n == 0:
                break
            removed += n
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def _delete(self, query: str, args: tuple[Any, ...]) -> int:
        rows = self.db.execute(query, args).fetchall()
        for alert_id, *media in rows:
            self.db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
            for path in media:
                if path:
                    (self.folder / path).unlink(missing_ok=True)
        return len(rows)

    # ---- reading ---------------------------------------------------------------------------------
    def _alert(self, row: sqlite3.Row) -> Alert:
        """A row by column name; a column an older store lacks (read-only) keeps its default."""
        values = {
            c.name: json.loads(row[c.name]) if c.is_json else row[c.name]
            for c in COLUMNS
            if c.name in self._present
        }
        return Alert(**values)

    def alerts(self, limit: int | None = None) -> Iterator[Alert]:
        query = "SELECT * FROM alerts ORDER BY id DESC" + (" LIMIT ?" if limit else "")
        for row in self.db.execute(query, (int(limit),) if limit else ()).fetchall():
            yield self._alert(row)

    def get(self, alert_id: int) -> Alert | None:
        row = self.db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else self._alert(row)

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])
