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

from dataclasses import dataclass

import numpy as np

TIME_EPS = 1e-6  # timestamps are floats: 0.3 - 0.1 must count as 0.2 s
IDLE, PENDING, ACTIVE, COOLDOWN = 0, 1, 2, 3


@dataclass(frozen=True)
class Step:
    """What happened on one frame, per row: (rows,) bool masks."""

    opened: np.ndarray
    peaked: np.ndarray
    closed: np.ndarray


class TrackerBank:
    def __init__(
        self,
        enter: np.ndarray,
        exit: np.ndarray,
        min_duration: np.ndarray,
        cooldown: np.ndarray,
        ema: np.ndarray,
    ) -> None:
        """Each argument: (rows,) float."""
        self.rows = len(enter)
        self.retune(enter, exit, min_duration, cooldown, ema)
        self.smoothed = np.full(self.rows, np.nan)  # nan until the first frame
        self.phase = np.full(self.rows, IDLE, np.int8)
        self.since = np.zeros(self.rows)  # when the current phase began
        self.start = np.zeros(self.rows)  # the open event's start
        self.peak = np.zeros(self.rows)  # the open event's peak score ...
        self.peak_time = np.zeros(self.rows)  # ... and when it was reached

    def retune(
        self,
        enter: np.ndarray,
        exit: np.ndarray,
        min_duration: np.ndarray,
        cooldown: np.ndarray,
        ema: np.ndarray,
    ) -> None:
        """New thresholds from the next frame on; the state (open events too) is kept."""
        arrays = [np.asarray(a, np.float64) for a in (enter, exit, min_duration, cooldown, ema)]
        if any(a.shape != (self.rows,) for a in arrays):
            raise ValueError(f"every threshold array must have shape ({self.rows},)")
        self.enter, self.exit, self.min_duration, self.cooldown, self.ema = arrays

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
