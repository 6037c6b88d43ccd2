"""The alert writer: the one thread that owns the SQLite store.

Messages are typed: `WriteAlert` (a new alert, or a re-caption of its event's alert) and
`CloseAlert` (its event ended). Both name the event by its uid, so the store needs no memory of
what was written: the row of an event is found by that uid, and nothing grows while `edge-run`
runs for months. A write that fails (read-only folder, full disk, locked database) is logged and
counted, nothing half-written stays, and detection goes on.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from h2a.edge.alert_store import AlertStore, StoreError
from h2a.edge.alerts import Alert
from h2a.edge.config import AlertConfig
from h2a.edge.evidence import SaveClip, encode_mp4
from h2a.edge.telemetry import Stats, iso_time, log_event

#: Seconds between retention passes (age and disk quota); each pass scans the table once.
RETENTION_INTERVAL_S = 60.0
SECONDS_PER_DAY = 86_400
BYTES_PER_MB = 1_000_000


@dataclass(frozen=True)
class WriteAlert:
    alert: Alert  # alert.uid is its event's uid
    jpeg: bytes | None


@dataclass(frozen=True)
class CloseAlert:
    uid: str  # the event's uid
    end_time: float
    end_position: float | None = None  # seconds into the source


AlertMessage: TypeAlias = WriteAlert | CloseAlert | SaveClip


class AlertWriter:
    """`folder=None` is a dry run: alerts are logged, nothing is stored."""

    def __init__(
        self, folder: Path | None, settings: Callable[[], AlertConfig], stats: Stats, outbox: bool = False
    ) -> None:
        """`outbox`: a forwarder sends the alerts on, so age retention keeps what it still owes."""
        self.folder, self.settings, self.stats, self.outbox = folder, settings, stats, outbox
        self._messages: queue.Queue[AlertMessage | None] = queue.Queue()
        self._store: AlertStore | None = None
        self._last_retention = 0.0

    def put(self, message: AlertMessage | None) -> None:
        """None ends `run` after the messages before it."""
        self._messages.put(message)

    def run(self) -> None:
        try:
            while (message := self._messages.get()) is not None:
                if self.folder is None:
                    self._dry_run(message)
                else:
                    self._handle(message, self.folder)
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _dry_run(self, message: AlertMessage) -> None:
        if isinstance(message, WriteAlert):
            a = message.alert
            log_event(
                "alert",
                event_id=a.uid,
                anomaly=a.anomaly,
                score=a.peak_score,
                caption=a.caption,
                stored="no (dry run)",
            )

    def _handle(self, message: AlertMessage, folder: Path) -> None:
        try:
            if self._store is None:
                self._store = AlertStore(folder)
            if isinstance(message, WriteAlert):
                self._write(self._store, message)
            elif isinstance(message, SaveClip):
                path = self._store.attach_clip(message.uid, encode_mp4(message))
                if path is not None:
                    self.stats.count("clips_written")
                    log_event("clip_written", event_id=message.uid, clip=path, frames=len(message.frames))
            else:
                self._store.close_alert(message.uid, message.end_time, message.end_position)
            if time.monotonic() - self._last_retention > RETENTION_INTERVAL_S:
                a = self.settings()
                _, dropped = self._store.enforce_retention(
                    a.retention_days * SECONDS_PER_DAY,
                    a.max_disk_mb * BYTES_PER_MB,
                    keep_unforwarded=self.outbox,
                )
                if dropped:
                    self.stats.count("alerts_dropped_unforwarded", dropped)
                    log_event(
                        "forward_dropped",
                        logging.ERROR,
                        alerts=dropped,
                        reason="disk quota (alerts.max_disk_mb)",
                    )
                self._last_retention = time.monotonic()
        except Exception as err:  # read-only folder, full disk, locked database: log, count, go on
            self.stats.count("alert_errors")
            log_event(
                "alert_not_written",
                logging.ERROR,
                folder=str(folder),
                error=(str(err).splitlines() or [repr(err)])[0],
            )
            if isinstance(err, StoreError):
                self._store = None  # could not open: try again with the next message

    def _write(self, store: AlertStore, message: WriteAlert) -> None:
        a = message.alert
        inserted = store.write(a, message.jpeg)
        self.stats.count("alerts_written" if inserted else "alerts_updated")
        log_event(
            "alert_written" if inserted else "alert_updated",
            id=a.id,
            event_id=a.uid,
            anomaly=a.anomaly,
            score=a.peak_score,
            start=iso_time(a.start_time),
            caption=a.caption,
        )
