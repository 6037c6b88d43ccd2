"""The hand-offs between the pipeline's threads, each bounded so nothing queues without limit.

- frames from capture to detection: `FrameQueue.live` for live sources (one slot, the newest
  frame wins, an untaken one is replaced and counted as dropped) or `FrameQueue.file` for files
  (a few frames ahead, nothing dropped: a file can wait for the detector);
- caption jobs from detection to the caption worker: `CaptionQueue`, where a full queue drops its
  oldest *peak* re-caption; openings and closings are never dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from h2a.edge.events import Change, Event
from h2a.edge.evidence import SaveClip
from h2a.edge.sources import Frame
from h2a.edge.telemetry import Stats
from h2a.runtime.engine import Detection

#: Caption jobs waiting before peak re-captions start to be dropped.
CAPTION_QUEUE_LIMIT = 4
#: Frames a live source may hold for the detector: one, the newest.
LIVE_SLOTS = 1
#: Frames a file source may read ahead of the detector.
FILE_READ_AHEAD = 4
#: How long a blocked `get` waits before the caller looks at its stop flag again.
POLL_S = 0.5


class FrameQueue:
    """capture thread -> detection loop, bounded. `newest_wins` (live sources): a full queue
    drops its oldest frame, counted as dropped. Otherwise (files) `put` waits while the queue is
    full, until `stopping` is set. `get` returns a frame, None on timeout, or False once the
    capture side closed the queue and it is empty."""

    def __init__(self, limit: int, newest_wins: bool, stats: Stats, stopping: threading.Event) -> None:
        self._cond = threading.Condition()
        self._frames: deque[Frame] = deque()
        self._closed = False
        self.limit, self.newest_wins, self.stats, self.stopping = limit, newest_wins, stats, stopping

    @classmethod
    def live(cls, stats: Stats, stopping: threading.Event) -> FrameQueue:
        return cls(LIVE_SLOTS, True, stats, stopping)

    @classmethod
    def file(cls, stats: Stats, stopping: threading.Event) -> FrameQueue:
        return cls(FILE_READ_AHEAD, False, stats, stopping)

    def put(self, frame: Frame) -> None:
        with self._cond:
            while len(self._frames) >= self.limit:
                if self.newest_wins:
                    self._frames.popleft()
                    self.stats.count("frames_dropped")
                elif self.stopping.is_set():
                    return
                else:
                    self._cond.wait(POLL_S)
            self._frames.append(frame)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float = POLL_S) -> Frame | bool | None:
        with self._cond:
            if not self._frames and not self._closed:
                self._cond.wait(timeout)
            if self._frames:
                frame = self._frames.popleft()
                self._cond.notify_all()
                return frame
            return False if self._closed else None

    def depth(self) -> int:
        with self._cond:
            return len(self._frames)


@dataclass
class CaptionJob:
    """What the caption worker needs for one event change; openings and peaks carry the frame."""

    change: Change
    event: Event
    frame: np.ndarray | None = None  # (H, W, 3) uint8 BGR, a copy owned by the job
    detection: Detection | None = None
    zones: list[str] = field(default_factory=list)


#: What the caption worker takes: a caption job, an evidence clip to pass on behind the alert it
#: belongs to, or None to finish.
CaptionItem: TypeAlias = CaptionJob | SaveClip | None


class CaptionQueue:
    def __init__(self, stats: Stats, limit: int = CAPTION_QUEUE_LIMIT) -> None:
        self._jobs: deque[CaptionItem] = deque()
        self._cond = threading.Condition()
        self.limit, self.stats = limit, stats

    def put(self, job: CaptionItem) -> None:
        """None tells the worker to finish after the jobs before it."""
        with self._cond:
            if isinstance(job, CaptionJob) and job.change is Change.PEAK and len(self._jobs) >= self.limit:
                for old in list(self._jobs):
                    if isinstance(old, CaptionJob) and old.change is Change.PEAK:
                        self._jobs.remove(old)
                        self.stats.count("captions_dropped")
                        break
            self._jobs.append(job)
            self._cond.notify()

    def get(self) -> CaptionItem:
        with self._cond:
            while not self._jobs:
                self._cond.wait()
            return self._jobs.popleft()

    def depth(self) -> int:
        with self._cond:
            return len(self._jobs)
