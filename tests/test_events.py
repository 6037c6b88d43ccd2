"""Event state machine on hand-made score sequences."""

from __future__ import annotations

import pytest

from h2a.edge.events import Change, EventEngine, TypeThresholds


def run(scores: list[float], th: TypeThresholds, dt: float = 0.1) -> list[tuple[float, Change, float]]:
    engine = EventEngine({"fighting": th})
    out = []
    for i, s in enumerate(scores):
        t = round(i * dt, 3)
        out += [(t, u.change, round(u.event.peak_score, 3)) for u in engine.update(t, {"fighting": s}, i)]
    return out


def test_opens_after_min_duration_peaks_and_closes_with_hysteresis() -> None:
    th = TypeThresholds(enter=0.5, exit=0.3, min_duration=0.2, cooldown=0.0, ema=1.0)
    events = run([0.1, 0.6, 0.6, 0.7, 0.9, 0.4, 0.35, 0.2, 0.1], th)
    assert events == [
        (0.3, Change.OPENED, 0.7),  # above 0.5 from t=0.1, open once 0.2 s have passed
        (0.4, Change.PEAK, 0.9),
        (0.7, Change.CLOSED, 0.9),  # 0.4 and 0.35 stay above exit (hysteresis); 0.2 closes
    ]


def test_a_short_spike_does_not_open() -> None:
    th = TypeThresholds(enter=0.5, exit=0.3, min_duration=0.3, ema=1.0)
    assert run([0.1, 0.9, 0.9, 0.1, 0.9, 0.1], th) == []


def test_ema_smooths_a_single_frame_out() -> None:
    th = TypeThresholds(enter=0.5, exit=0.3, min_duration=0.0, ema=0.3)
    assert run([0.0, 1.0, 0.0, 0.0], th) == []  # smoothed peak 0.3 < 0.5
    assert run([0.0, 1.0, 1.0, 1.0], th)[0][1] is Change.OPENED


def test_cooldown_keeps_a_type_quiet() -> None:
    th = TypeThresholds(enter=0.5, exit=0.3, min_duration=0.0, cooldown=1.0, ema=1.0)
    events = run([0.9, 0.1, 0.9, 0.9, 0.1] + [0.1] * 8 + [0.9], th)
    opened = [t for t, c, _ in events if c is Change.OPENED]
    assert opened == [0.0, 1.3]  # the re-entry at 0.2 falls inside the 1 s cooldown


def test_close_all_at_end_of_stream() -> None:
    engine = EventEngine({"riot": TypeThresholds(min_duration=0.0, ema=1.0)})
    engine.update(0.0, {"riot": 0.9})
    (update,) = engine.close_all(5.0)
    assert update.change is Change.CLOSED and update.event.end == 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"enter": 0.3, "exit": 0.5}, "exit"),
        ({"enter": 1.5}, "enter"),
        ({"cooldown": -1.0}, "cooldown"),
    ],
)
def test_thresholds_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TypeThresholds(**kwargs).check("anomaly.fighting")


def test_every_event_gets_its_own_id_even_when_earlier_events_are_freed() -> None:
    """Keys from `id(event)` were reused once an event was freed (4 distinct ids for 200 events):
    each opened event must carry its own uid, the key of its alert row."""
    engine = EventEngine({"fighting": TypeThresholds(enter=0.5, exit=0.5, min_duration=0, cooldown=0, ema=1)})
    uids, opened = set(), 0
    for i in range(10_000):
        for update in engine.update(i * 0.1, {"fighting": 0.9 if i % 2 else 0.1}, i):
            if update.change is Change.OPENED:
                opened += 1
                uids.add(update.event.uid)
    assert opened == 5_000 and len(uids) == opened
