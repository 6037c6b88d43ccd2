"""The alert store: SQLite in WAL mode is the record of truth; a snapshot JPEG sits beside it.

Durability: a snapshot is written to a temporary file, fsynced and renamed before the row that
names it is committed with `synchronous=FULL`; only then is an alert "written". A power cut or
`kill -9` therefore leaves either no trace of an alert or a complete one; stray temporary files
and unreferenced snapshots are swept on the next open. The schema is versioned in `meta`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from h2a.runtime.errors import H2AError

SCHEMA_VERSION = 1
DB_NAME = "alerts.db"
SNAPSHOT_DIR = "snapshots"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    camera TEXT NOT NULL,
    anomaly TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    peak_score REAL NOT NULL,
    peak_time REAL NOT NULL,
    what TEXT NOT NULL,
    who TEXT NOT NULL,
    location TEXT NOT NULL,
    caption TEXT NOT NULL,
    triplets TEXT NOT NULL,
    zones TEXT NOT NULL,
    snapshot TEXT,
    snapshot_bytes INTEGER NOT NULL DEFAULT 0,
    model_sha256 TEXT NOT NULL,
    config_version TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_start ON alerts(start_time);
"""


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
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    snapshot: str | None = None
    snapshot_bytes: int = 0
    id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


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
    """One connection, used from one thread (the alert writer)."""

    def __init__(self, folder: str | Path, readonly: bool = False) -> None:
        self.folder = Path(folder)
        self.snapshots = self.folder / SNAPSHOT_DIR
        try:
            if not readonly:
                self.snapshots.mkdir(parents=True, exist_ok=True)
            elif not (self.folder / DB_NAME).is_file():
                raise StoreError(f"{self.folder}: no alert store here ({DB_NAME} missing)")
            uri = f"file:{self.folder / DB_NAME}" + ("?mode=ro" if readonly else "")
            self.db = sqlite3.connect(
                uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(SCHEMA)
                self._check_version(create=True)
                self.sweep()
            else:
                self._check_version(create=False)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open the alert store in {self.folder}: {err}") from None

    def _check_version(self, create: bool) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None and create:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row is None or int(row[0]) != SCHEMA_VERSION:
            found = None if row is None else row[0]
            raise StoreError(
                f"{self.folder}: alert store schema version {found}, this tool reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self.db.close()

    # ---- writing ---------------------------------------------------------------------------------
    def write(self, alert: Alert, snapshot_jpeg: bytes | None) -> Alert:
        """Insert a new alert, or replace the caption/snapshot/peak of one already written."""
        old_snapshot = None
        if alert.id is not None:
            row = self.db.execute("SELECT snapshot FROM alerts WHERE id = ?", (alert.id,)).fetchone()
            old_snapshot = row[0] if row else None
        name = None
        if snapshot_jpeg is not None:
            name = f"{alert.uid}-{int(time.time() * 1000)}.jpg"
            write_atomic(self.snapshots / name, snapshot_jpeg)
            alert.snapshot, alert.snapshot_bytes = f"{SNAPSHOT_DIR}/{name}", len(snapshot_jpeg)
        values = (
            alert.uid,
            alert.camera,
            alert.anomaly,
            alert.start_time,
            alert.end_time,
            alert.peak_score,
            alert.peak_time,
            alert.what,
            alert.who,
            alert.location,
            alert.caption,
            json.dumps(alert.triplets),
            json.dumps(alert.zones),
            alert.snapshot,
            alert.snapshot_bytes,
            alert.model_sha256,
            alert.config_version,
        )
        try:
            self.db.execute("BEGIN IMMEDIATE")
            if alert.id is None:
                cur = self.db.execute(
                    "INSERT INTO alerts (uid, camera, anomaly, start_time, end_time, peak_score, peak_time, "
                    "what, "
                    "who, location, caption, triplets, zones, snapshot, snapshot_bytes, model_sha256, "
                    "config_version, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (*values, time.time()),
                )
                alert.id = cur.lastrowid
            else:
                self.db.execute(
                    "UPDATE alerts SET uid=?, camera=?, anomaly=?, start_time=?, end_time=?, peak_score=?, "
                    "peak_time=?, what=?, who=?, location=?, caption=?, triplets=?, zones=?, snapshot=?, "
                    "snapshot_bytes=?, model_sha256=?, config_version=? WHERE id=?",
                    (*values, alert.id),
                )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if name is not None:
                (self.snapshots / name).unlink(missing_ok=True)
            raise
        if old_snapshot and name is not None and old_snapshot != alert.snapshot:
            (self.folder / old_snapshot).unlink(missing_ok=True)
        return alert

    def close_alert(self, alert_id: int, end_time: float) -> None:
        self.db.execute("UPDATE alerts SET end_time = ? WHERE id = ?", (end_time, alert_id))

    # ---- housekeeping ----------------------------------------------------------------------------
    def sweep(self) -> int:
        """Remove temporary files and snapshots that no committed row names (after a crash)."""
        named = {row[0] for row in self.db.execute("SELECT snapshot FROM alerts WHERE snapshot IS NOT NULL")}
        removed = 0
        for path in self.snapshots.iterdir():
            if f"{SNAPSHOT_DIR}/{path.name}" not in named:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def disk_bytes(self) -> int:
        total = sum(p.stat().st_size for p in self.folder.glob(DB_NAME + "*"))
        return total + int(
            self.db.execute("SELECT COALESCE(SUM(snapshot_bytes), 0) FROM alerts").fetchone()[0]
        )

    def enforce_retention(self, max_age_s: float, max_bytes: float, now: float | None = None) -> int:
        """Delete alerts older than `max_age_s`, then the oldest until the store fits `max_bytes`."""
        now = time.time() if now is None else now
        removed = self._delete(
            "SELECT id, snapshot FROM alerts WHERE start_time < ? ORDER BY id", (now - max_age_s,)
        )
        while self.disk_bytes() > max_bytes:
            n = self._delete("SELECT id, snapshot FROM alerts ORDER BY start_time, id LIMIT 10", ())
            if n == 0:
                break
            removed += n
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def _delete(self, query: str, args: tuple[Any, ...]) -> int:
        rows = self.db.execute(query, args).fetchall()
        for alert_id, snapshot in rows:
            self.db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
            if snapshot:
                (self.folder / snapshot).unlink(missing_ok=True)
        return len(rows)

    # ---- reading ---------------------------------------------------------------------------------
    def _alert(self, row: sqlite3.Row | tuple[Any, ...]) -> Alert:
        (
            aid,
            uid,
            camera,
            anomaly,
            start,
            end,
            peak,
            peak_t,
            what,
            who,
            where,
            caption,
            triplets,
            zones,
            snap,
            snap_bytes,
            model,
            cfg,
            _created,
        ) = row
        return Alert(
            camera,
            anomaly,
            start,
            peak,
            peak_t,
            what,
            who,
            where,
            caption,
            json.loads(triplets),
            json.loads(zones),
            model,
            cfg,
            end,
            uid,
            snap,
            snap_bytes,
            aid,
        )

    def alerts(self, limit: int | None = None) -> Iterator[Alert]:
        query = "SELECT * FROM alerts ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        for row in self.db.execute(query).fetchall():
            yield self._alert(row)

    def get(self, alert_id: int) -> Alert | None:
        row = self.db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else self._alert(row)

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])
