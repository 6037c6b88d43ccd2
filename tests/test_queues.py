"""The hand-offs between pipeline threads: bounded, newest-wins for live sources, lossless for files."""

from __future__ import annotations

import threading
import time

import numpy as np

from h2a.edge.events import Change, Event
from h2a.edge.queues import CaptionJob, CaptionQueue, FrameQueue
from h2a.edge.sources import Frame
from h2a.edge.telemetry import Stats


def frame(i: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), i, float(i))


def test_live_queue_keeps_the_newest_frame_and_counts_drops() -> None:
    stats = Stats()
    q = FrameQueue.live(stats, threading.Event())
    for i in range(5):
        q.put(frame(i))
    got = q.get(timeout=0)
    assert isinstance(got, Frame) and got.index == 4 and stats.get("frames_dropped") == 4
    assert q.get(timeout=0) is None  # empty, still open
    q.close()
    assert q.get(timeout=0) is False


def test_file_queue_waits_for_the_reader_and_loses_nothing() -> None:
    q = FrameQueue.file(Stats(), threading.Event())
    done = threading.Event()

    def produce() -> None:
        for i in range(20):
            q.put(frame(i))
        q.close()
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    time.sleep(0.2)
    assert not done.is_set() and q.depth() == q.limit  # the producer waits on a full queue
    seen = []
    while (got := q.get(timeout=1)) is not False:
        assert isinstance(got, Frame)
        seen.append(got.index)
    assert seen == list(range(20))


def test_a_stopping_pipeline_unblocks_a_waiting_file_reader() -> None:
    stopping = threading.Event()
    q = FrameQueue.file(Stats(), stopping)
    for i in range(q.limit):
        q.put(frame(i))
    stopping.set()
    started = time.monotonic()
    q.put(frame(99))  # would wait for ever without the stop
    assert time.monotonic() - started < 2 and q.depth() == q.limit


def test_caption_queue_drops_only_peak_recaptions_when_full() -> None:
    stats = Stats()
    q = CaptionQueue(stats, limit=2)
    event = Event("riot", 0.0, 0.9, 0.0)
    q.put(CaptionJob(Change.PEAK, event))
    q.put(CaptionJob(Change.OPENED, event))
    q.put(CaptionJob(Change.PEAK, event))  # full: the older peak goes
    q.put(CaptionJob(Change.CLOSED, event))  # closings are never dropped
    changes = [job.change for job in (q.get(), q.get(), q.get()) if isinstance(job, CaptionJob)]
    assert changes == [Change.OPENED, Change.PEAK, Change.CLOSED] and stats.get("captions_dropped") == 1
