"""Whether an event may raise an alert: arming schedules, then zones. Events are still scored,
opened and logged when disarmed; only the alert is withheld.

`edge-run` asks when an event opens or peaks (until it has alerted); `edge-tune sweep` asks the
same function with the cached triplet boxes, so both decide alike. Schedules need wall-clock
time: the sweep over recorded clips passes none and judges zones only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from h2a.edge.config import EdgeConfig
from h2a.edge.config_areas import DAYS, Schedule
from h2a.edge.zones import zones_of


@dataclass(frozen=True)
class Verdict:
    armed: bool
    zones: list[str] = field(default_factory=list)  # zones holding a triplet's subject (reported)
    reason: str = ""  # why it is not armed


def _covers(s: Schedule, when: dt.datetime) -> bool:
    minute = when.hour * 60 + when.minute
    today, yesterday = DAYS[when.weekday()], DAYS[(when.weekday() - 1) % 7]
    if s.start < s.end:
        return today in s.days and s.start <= minute < s.end
    # passes midnight: the evening belongs to the day it starts on, the small hours to the day before
    return (today in s.days and minute >= s.start) or (yesterday in s.days and minute < s.end)


def decide(
    config: EdgeConfig,
    anomaly: str,
    peak: float,
    lasted: float,
    subjects: list[tuple[np.ndarray, np.ndarray]],
    frame_size: tuple[int, int],
    when: dt.datetime | None,
) -> Verdict:
    """`peak`: the event's score so far; `lasted`: seconds since it started; `subjects`: each
    triplet's (subject, object) boxes in frame pixels; `frame_size`: (width, height)."""
    allowed_zones: set[str] | None = None
    if config.schedules and when is not None:
        active = [s for s in config.schedules if _covers(s, when) and (s.types is None or anomaly in s.types)]
        if not active:
            return Verdict(False, reason="disarmed by schedule")
        if all(s.zones is not None for s in active):
            allowed_zones = {z for s in active for z in (s.zones or ())}
    width, height = frame_size
    inside = zones_of(config.zones, subjects, width, height)
    if not config.zones:
        return Verdict(True, inside)
    by_name = {z.name: z for z in config.zones}
    for name in inside:
        zone = by_name[name]
        if (
            (zone.types is None or anomaly in zone.types)
            and (allowed_zones is None or name in allowed_zones)
            and peak >= (zone.enter if zone.enter is not None else 0.0)
            and lasted >= (zone.min_duration if zone.min_duration is not None else 0.0)
        ):
            return Verdict(True, inside)
    return Verdict(False, inside, "outside every zone that arms it")
