"""Event logic per anomaly type, as field engineers know it from NVR software:

- the raw per-frame probability is smoothed by an exponential moving average (EMA);
- an event *opens* once the smoothed score has stayed at or above `enter` for `min_duration`
  seconds, *updates* its peak while it lasts, and *closes* when the score falls below `exit`
  (hysteresis: exit < enter, so a score hovering at the threshold does not flap);
- after closing, a type stays quiet for `cooldown` seconds.

The state machine itself is `h2a.edge.tracker_bank`, stepped for every type at once; this module
turns its rows into `Event` objects. `edge-tune sweep` steps the same bank over cached scores for
hundreds of threshold settings, so what it predicts is what `edge-run` does. Driven by
(timestamp, scores) pairs, it is tested with hand-made score sequences and replays alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from h2a.edge.tracker_bank import TrackerBank

#: Bounds the config checker (h2a.runtime.schema) applies to a threshold field.
UNIT = {"min": 0.0, "max": 1.0}
NON_NEGATIVE = {"min": 0.0}


@dataclass(frozen=True)
class TypeThresholds:
    enter: float = field(default=0.5, metadata=UNIT)
    exit: float = field(default=0.35, metadata=UNIT)
    # seconds at or above `enter` before an event opens
    min_duration: float = field(default=0.5, metadata=NON_NEGATIVE)
    # seconds after an event closes before the same type may open again
    cooldown: float = field(default=10.0, metadata=NON_NEGATIVE)
    # weight of the newest frame in the moving average (1 = no smoothing)
    ema: float = field(default=0.5, metadata=UNIT)

    def check(self, where: str) -> None:
        for key, value in (("enter", self.enter), ("exit", self.exit), ("ema", self.ema)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{where}.{key} must lie in [0, 1], got {value}")
        if self.exit > self.enter:
            raise ValueError(f"{where}.exit ({self.exit}) must not exceed {where}.enter ({self.enter})")
        if self.ema <= 0.0:
            raise ValueError(f"{where}.ema must be above 0")
        for key, value in (("min_duration", self.min_duration), ("cooldown", self.cooldown)):
            if value < 0:
                raise ValueError(f"{where}.{key} must not be negative, got {value}")


class Change(Enum):
    OPENED = "opened"
    PEAK = "peak"  # an open event reached a new peak score
    CLOSED = "closed"


def new_event_id() -> str:
    """A random 128-bit id: unique across restarts and cameras, so it can key the alert row and
    the messages that leave the box (Python's `id()` of an event is reused once it is freed)."""
    return uuid.uuid4().hex


@dataclass
class Event:
    anomaly: str
    start: float
    peak_score: float
    peak_time: float
    end: float | None = None
    peak_frame: int = -1
    captioned_score: float = 0.0  # peak score of the last caption job, to rate-limit re-captions
    uid: str = field(default_factory=new_event_id)  # assigned once, when the event opens
    start_position: float | None = None  # seconds into the source (set by the pipeline)
    end_position: float | None = None
    alerted: bool = False  # an alert was raised (schedules and zones may withhold it)


@dataclass
class EventUpdate:
    change: Change
    event: Event


@dataclass
class EventEngine:
    """One row of the shared state machine (`h2a.edge.tracker_bank`) per anomaly type, turned
    into `Event` objects with their own uid."""

    thresholds: dict[str, TypeThresholds]

    def __post_init__(self) -> None:
        self.types = list(self.thresholds)
        self.bank = TrackerBank([self.thresholds[name] for name in self.types])
        self.open: dict[str, Event] = {}

    def set_thresholds(self, thresholds: dict[str, TypeThresholds]) -> None:
        """Config reload: new thresholds apply from the next frame; open events stay open."""
        if set(thresholds) != set(self.types):
            raise ValueError(f"thresholds for {sorted(thresholds)}, this engine tracks {sorted(self.types)}")
        self.thresholds = thresholds
        self.bank.retune([thresholds[name] for name in self.types])

    def update(self, t: float, scores: dict[str, float], frame: int = -1) -> list[EventUpdate]:
        step = self.bank.step(t, np.array([scores.get(name, 0.0) for name in self.types]))
        out = []
        for row in np.flatnonzero(step.opened | step.peaked | step.closed):
            name, bank = self.types[row], self.bank
            if step.opened[row]:
                peak = float(bank.peak[row])
                event = Event(name, float(bank.start[row]), peak, t, peak_frame=frame)
                self.open[name] = event
                out.append(EventUpdate(Change.OPENED, event))
            elif step.peaked[row]:
                event = self.open[name]
                event.peak_score, event.peak_time, event.peak_frame = float(bank.peak[row]), t, frame
                out.append(EventUpdate(Change.PEAK, event))
            else:
                event = self.open.pop(name)
                event.end = t
                out.append(EventUpdate(Change.CLOSED, event))
        return out

    def close_all(self, t: float) -> list[EventUpdate]:
        """End of stream: close what is open."""
        out = []
        for row in np.flatnonzero(self.bank.close_open()):
            event = self.open.pop(self.types[row])
            event.end = t
            out.append(EventUpdate(Change.CLOSED, event))
        return out

    def smoothed(self) -> dict[str, float]:
        values = np.nan_to_num(self.bank.smoothed)
        return {name: float(values[i]) for i, name in enumerate(self.types)}
