"""Event logic per anomaly type, as field engineers know it from NVR software:

- the raw per-frame probability is smoothed by an exponential moving average (EMA);
- an event *opens* once the smoothed score has stayed at or above `enter` for `min_duration`
  seconds, *updates* its peak while it lasts, and *closes* when the score falls below `exit`
  (hysteresis: exit < enter, so a score hovering at the threshold does not flap);
- after closing, a type stays quiet for `cooldown` seconds.

The state machine is plain Python, driven by (timestamp, scores) pairs, so it is tested with
hand-made score sequences and replays of recorded clips alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum

TIME_EPS = 1e-6  # timestamps are floats: 0.3 - 0.1 must count as 0.2 s


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


class Phase(Enum):
    IDLE = "idle"
    PENDING = "pending"  # above enter, waiting for min_duration
    ACTIVE = "active"
    COOLDOWN = "cooldown"


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


@dataclass
class EventUpdate:
    change: Change
    event: Event


@dataclass
class TypeTracker:
    anomaly: str
    thresholds: TypeThresholds
    smoothed: float | None = None
    phase: Phase = Phase.IDLE
    since: float = 0.0  # when the current phase began
    event: Event | None = None

    def update(self, t: float, score: float, frame: int) -> list[EventUpdate]:
        th = self.thresholds
        s = score if self.smoothed is None else th.ema * score + (1 - th.ema) * self.smoothed
        self.smoothed = s
        out: list[EventUpdate] = []
        if self.phase is Phase.COOLDOWN and t - self.since >= th.cooldown - TIME_EPS:
            self.phase = Phase.IDLE
        if self.phase is Phase.IDLE and s >= th.enter:
            self.phase, self.since = Phase.PENDING, t
        if self.phase is Phase.PENDING:
            if s < th.enter:
                self.phase = Phase.IDLE
            elif t - self.since >= th.min_duration - TIME_EPS:
                self.phase = Phase.ACTIVE
                self.event = Event(
                    self.anomaly, start=self.since, peak_score=s, peak_time=t, peak_frame=frame
                )
                out.append(EventUpdate(Change.OPENED, self.event))
                return out
        if self.phase is Phase.ACTIVE and self.event is not None:
            if s < th.exit:
                self.event.end = t
                out.append(EventUpdate(Change.CLOSED, self.event))
                self.phase, self.since, self.event = Phase.COOLDOWN, t, None
            elif s > self.event.peak_score:
                self.event.peak_score, self.event.peak_time, self.event.peak_frame = s, t, frame
                out.append(EventUpdate(Change.PEAK, self.event))
        return out

    def close(self, t: float) -> list[EventUpdate]:
        """End of stream: close what is open."""
        if self.phase is Phase.ACTIVE and self.event is not None:
            self.event.end = t
            event, self.event, self.phase = self.event, None, Phase.IDLE
            return [EventUpdate(Change.CLOSED, event)]
        return []


@dataclass
class EventEngine:
    thresholds: dict[str, TypeThresholds]
    trackers: dict[str, TypeTracker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trackers = {name: TypeTracker(name, th) for name, th in self.thresholds.items()}

    def set_thresholds(self, thresholds: dict[str, TypeThresholds]) -> None:
        """Config reload: new thresholds apply from the next frame; open events stay open."""
        self.thresholds = thresholds
        for name, th in thresholds.items():
            tracker = self.trackers.setdefault(name, TypeTracker(name, th))
            tracker.thresholds = th

    def update(self, t: float, scores: dict[str, float], frame: int = -1) -> list[EventUpdate]:
        out = []
        for name, tracker in self.trackers.items():
            out.extend(tracker.update(t, scores.get(name, 0.0), frame))
        return out

    def close_all(self, t: float) -> list[EventUpdate]:
        out = []
        for tracker in self.trackers.values():
            out.extend(tracker.close(t))
        return out

    def smoothed(self) -> dict[str, float]:
        return {n: (tr.smoothed or 0.0) for n, tr in self.trackers.items()}
