"""The event state machine, stepped for many threshold settings at once.

One row per (anomaly type, threshold setting): `edge-run` steps one row per anomaly type
(`EventEngine`), `edge-tune sweep` steps hundreds of candidate settings over cached scores. Both
run this one piece of code, so the sweep's predicted events are the events `edge-run` opens.

Per row and frame, with `s` the smoothed score (EMA):
IDLE -> PENDING when s >= enter; PENDING -> IDLE when s < enter, -> ACTIVE (the event opens, at
the time PENDING began) once it lasted `min_duration`; ACTIVE records new peaks and -> COOLDOWN
(the event closes) when s < exit; COOLDOWN -> IDLE after `cooldown` seconds. A row that opens
does not also peak or close on that frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

TIME_EPS = 1e-6  # timestamps are floats: 0.3 - 0.1 must count as 0.2 s
IDLE, PENDING, ACTIVE, COOLDOWN = 0, 1, 2, 3


@dataclass(frozen=True)
class Step:
    """What happened on one frame, per row: (rows,) bool masks."""

    opened: np.ndarray
    peaked: np.ndarray
    closed: np.ndarray


class Setting(Protocol):
    """One row's thresholds (`h2a.edge.events.TypeThresholds` is one)."""

    @property
    def enter(self) -> float: ...
    @property
    def exit(self) -> float: ...
    @property
    def min_duration(self) -> float: ...
    @property
    def cooldown(self) -> float: ...
    @property
    def ema(self) -> float: ...


class TrackerBank:
    def __init__(self, settings: Sequence[Setting]) -> None:
        """One row per setting."""
        self.rows = len(settings)
        self.retune(settings)
        self.smoothed = np.full(self.rows, np.nan)  # nan until the first frame
        self.phase = np.full(self.rows, IDLE, np.int8)
        self.since = np.zeros(self.rows)  # when the current phase began
        self.start = np.zeros(self.rows)  # the open event's start
        self.peak = np.zeros(self.rows)  # the open event's peak score ...
        self.peak_time = np.zeros(self.rows)  # ... and when it was reached

    def retune(self, settings: Sequence[Setting]) -> None:
        """New thresholds from the next frame on; the state (open events too) is kept."""
        if len(settings) != self.rows:
            raise ValueError(f"{len(settings)} settings for a bank of {self.rows} rows")
        self.enter = np.array([s.enter for s in settings], np.float64)  # (rows,)
        self.exit = np.array([s.exit for s in settings], np.float64)
        self.min_duration = np.array([s.min_duration for s in settings], np.float64)
        self.cooldown = np.array([s.cooldown for s in settings], np.float64)
        self.ema = np.array([s.ema for s in settings], np.float64)

    def step(self, t: float, scores: np.ndarray) -> Step:
        """scores: (rows,) raw probability of each row's anomaly type at time t (seconds)."""
        first = np.isnan(self.smoothed)
        s = np.where(first, scores, self.ema * scores + (1 - self.ema) * self.smoothed)
        self.smoothed = s
        phase = self.phase
        phase[(phase == COOLDOWN) & (t - self.since >= self.cooldown - TIME_EPS)] = IDLE
        starts = (phase == IDLE) & (s >= self.enter)
        phase[starts] = PENDING
        self.since[starts] = t
        pending = phase == PENDING
        below = s < self.enter
        phase[pending & below] = IDLE
        opened = pending & ~below & (t - self.since >= self.min_duration - TIME_EPS)
        phase[opened] = ACTIVE
        self.start[opened] = self.since[opened]
        self.peak[opened] = s[opened]
        self.peak_time[opened] = t
        active = (phase == ACTIVE) & ~opened
        closed = active & (s < self.exit)
        phase[closed] = COOLDOWN
        self.since[closed] = t
        peaked = active & ~closed & (s > self.peak)
        self.peak[peaked] = s[peaked]
        self.peak_time[peaked] = t
        return Step(opened, peaked, closed)

    def close_open(self) -> np.ndarray:
        """End of stream: the rows whose event is open end it; -> their (rows,) mask."""
        open_rows = self.phase == ACTIVE
        self.phase[open_rows] = IDLE
        return open_rows
