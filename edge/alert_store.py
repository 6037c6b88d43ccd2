"""The alert store: SQLite in WAL mode is the record of truth; snapshots and evidence clips sit
beside it.

Durability: a snapshot is written to a temporary file, fsynced and renamed before the row that
names it is committed with `synchronous=FULL`; only then is an alert "written". A power cut or
`kill -9` therefore leaves either no trace of an alert or a complete one; stray temporary files
and unreferenced snapshots or clips are swept on the next open.

The table is derived from `h2a.edge.alerts.Alert`. The schema is versioned in `meta`; a store of
an older version gains the columns it lacks when `edge-run` opens it, and readers fill what it
lacks with defaults.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h2a.edge.alerts import COLUMNS, LABELS, UPSERT_SQL, WRITTEN, Alert, create_table_sql
from h2a.runtime.errors import H2AError, InputError

SCHEMA_VERSION = 2  # 2: positions in the source, the source, labels, evidence clips, the outbox
DB_NAME = "alerts.db"
SNAPSHOT_DIR = "snapshots"
CLIP_DIR = "clips"
#: How long a connection waits for a lock held by another process (a reader, `edge-alerts`).
LOCK_TIMEOUT_S = 10.0
#: Deleting the oldest alerts to fit the disk quota goes in batches of this many rows.
QUOTA_DELETE_BATCH = 10
#: What deleting a row needs: its id, its files, and whether the broker is still owed it.
DELETED = "id, snapshot, clip, forward_seq > forwarded_seq"


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to list: every field left empty admits all."""

    anomaly: str = ""
    camera: str = ""
    since: float | None = None  # start_time >= since (epoch seconds)
    until: float | None = None  # start_time < until
    label: str = ""  # one of LABELS, "none" for unlabelled, "" for any

    def sql(self) -> tuple[list[str], tuple[Any, ...]]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("anomaly", self.anomaly), ("camera", self.camera)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.since is not None:
            clauses.append("start_time >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("start_time < ?")
            args.append(self.until)
        if self.label == "none":
            clauses.append("label IS NULL")
        elif self.label:
            clauses.append("label = ?")
            args.append(self.label)
        return clauses, tuple(args)


class StoreError(H2AError):
    exit_code = 1


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
        try:
            self.db.execute("BEGIN IMMEDIATE")
            alert.forward_seq = self._next_seq()
            values = [
                json.dumps(getattr(alert, c.name)) if c.is_json else getattr(alert, c.name) for c in WRITTEN
            ]
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
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(
                "UPDATE alerts SET end_time = ?, end_position = ?, forward_seq = ? WHERE uid = ?",
                (end_time, end_position, self._next_seq(), uid),
            )
            self.db.execute("COMMIT" if cur.rowcount else "ROLLBACK")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        return cur.rowcount > 0

    def _next_seq(self) -> int:
        """The next change number (inside the caller's transaction); kept in `meta`, so it never
        goes back, also when retention deletes the newest rows."""
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('forward_seq', '0')")
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'forward_seq'")
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'forward_seq'").fetchone()[0])

    # ---- the outbox --------------------------------------------------------------------------------
    def pending(self, limit: int) -> list[Alert]:
        """Changes not yet acknowledged by the broker, oldest change first."""
        rows = self.db.execute(
            "SELECT * FROM alerts WHERE forward_seq > forwarded_seq ORDER BY forward_seq LIMIT ?", (limit,)
        ).fetchall()
        return [self._alert(row) for row in rows]

    def mark_forwarded(self, uid: str, seq: int) -> None:
        self.db.execute("UPDATE alerts SET forwarded_seq = MAX(forwarded_seq, ?) WHERE uid = ?", (seq, uid))

    def backlog(self) -> int:
        return int(
            self.db.execute("SELECT COUNT(*) FROM alerts WHERE forward_seq > forwarded_seq").fetchone()[0]
        )

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

    def enforce_retention(
        self, max_age_s: float, max_bytes: float, now: float | None = None, keep_unforwarded: bool = False
    ) -> tuple[int, int]:
        """Delete alerts older than `max_age_s` (with `keep_unforwarded`, not those the forwarder
        still owes the broker), then the oldest until the store fits `max_bytes` (those too: the
        disk quota wins). -> (alerts deleted, of them not yet forwarded)."""
        now = time.time() if now is None else now
        owed = " AND forward_seq <= forwarded_seq" if keep_unforwarded else ""
        removed, dropped = self._delete(
            f"SELECT {DELETED} FROM alerts WHERE start_time < ?{owed} ORDER BY id",
            (now - max_age_s,),
        )
        while self.disk_bytes() > max_bytes:
            n, d = self._delete(
                f"SELECT {DELETED} FROM alerts ORDER BY start_time, id LIMIT ?",
                (QUOTA_DELETE_BATCH,),
            )
            if n == 0:
                break
            removed, dropped = removed + n, dropped + d
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed, dropped if keep_unforwarded else 0

    def _delete(self, query: str, args: tuple[Any, ...]) -> tuple[int, int]:
        """-> (rows deleted, of them still owed to the broker)."""
        rows = self.db.execute(query, args).fetchall()
        owed = 0
        for alert_id, *media, unforwarded in rows:
            owed += int(bool(unforwarded))
            self.db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
            for path in media:
                if path:
                    (self.folder / path).unlink(missing_ok=True)
        return len(rows), owed

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

    def search(self, where: AlertFilter, limit: int, offset: int = 0) -> tuple[list[Alert], int]:
        """Newest first, one page of those `where` admits; -> (the page, how many match in all)."""
        clauses, args = where.sql()
        cond = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        total = int(self.db.execute(f"SELECT COUNT(*) FROM alerts{cond}", args).fetchone()[0])
        query = f"SELECT * FROM alerts{cond} ORDER BY id DESC LIMIT ? OFFSET ?"
        rows = self.db.execute(query, (*args, int(limit), int(offset))).fetchall()
        return [self._alert(r) for r in rows], total

    def distinct(self, column: str) -> list[str]:
        """The values one text column takes (cameras, anomaly types), for filter menus."""
        if column not in {"camera", "anomaly"}:
            raise ValueError(f"no filter menu for column {column!r}")
        return [r[0] for r in self.db.execute(f"SELECT DISTINCT {column} FROM alerts ORDER BY {column}")]

    def get(self, alert_id: int) -> Alert | None:
        row = self.db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else self._alert(row)

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])
