"""The alert writer on a real SQLite store: one row per event, however many events come and go."""

from __future__ import annotations

import threading
from pathlib import Path

from h2a.edge.alert_store import AlertStore
from h2a.edge.alert_writer import AlertWriter, CloseAlert, WriteAlert
from h2a.edge.config import AlertConfig
from h2a.edge.events import Change, EventEngine, TypeThresholds
from h2a.edge.telemetry import Stats

from .test_alert_store import make_alert

#: enter == exit, no smoothing, no minimum duration or cooldown: every swing is its own event.
FLAPPING = TypeThresholds(enter=0.5, exit=0.5, min_duration=0.0, cooldown=0.0, ema=1.0)
#: open at 0.6, a new peak at 0.9 (re-captioned), close at 0.1
SCORES = (0.6, 0.9, 0.1)


def test_thousands_of_short_events_each_get_their_own_row(tmp_path: Path) -> None:
    stats = Stats()
    writer = AlertWriter(tmp_path, AlertConfig, stats)
    thread = threading.Thread(target=writer.run)
    thread.start()
    events = EventEngine({"fighting": FLAPPING})
    opened: list[str] = []
    n_events = 1_500
    for i in range(n_events * len(SCORES)):
        score = SCORES[i % len(SCORES)]
        for update in events.update(i * 0.1, {"fighting": score}, i):
            event = update.event
            if update.change is Change.CLOSED:
                assert event.end is not None
                writer.put(CloseAlert(event.uid, event.end))
                continue
            if update.change is Change.OPENED:
                opened.append(event.uid)
            alert = make_alert(i)
            alert.uid, alert.caption, alert.peak_score = event.uid, f"{event.uid} at {score}", score
            writer.put(WriteAlert(alert, b"\xff\xd8" + bytes(64)))
        # the event objects go out of scope here, as they do in edge-run
    writer.put(None)
    thread.join(timeout=300)
    assert not thread.is_alive()
    store = AlertStore(tmp_path, readonly=True)
    rows = list(store.alerts())
    assert len(opened) == n_events and len(set(opened)) == n_events
    assert len(rows) == n_events and {a.uid for a in rows} == set(opened)
    for a in rows:  # each row holds its own event's peak caption and was closed
        assert a.caption == f"{a.uid} at 0.9" and a.peak_score == 0.9 and a.end_time is not None
    assert stats.get("alerts_written") == n_events and stats.get("alerts_updated") == n_events
    assert len(list((tmp_path / "snapshots").iterdir())) == n_events  # replaced, not piled up
