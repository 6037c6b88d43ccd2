"""The frame pipeline: capture -> detect -> events -> caption worker -> alert writer.

- capture runs on its own thread; on a live source the newest frame wins (a frame the detector
  has not taken yet is replaced and counted as dropped); a file is read without dropping;
- detection never waits for captions: caption jobs go to a bounded queue where, when full, the
  oldest *peak* re-caption is dropped (openings and closings are never dropped);
- the caption worker runs `cap_encoder` + greedy `dec_step` and hands alerts to the writer;
- the alert writer owns the SQLite store; a write that fails (read-only folder, full disk) is
  logged and counted, nothing half-written stays, and detection goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from h2a.edge.alerts import Alert, AlertStore, StoreError
from h2a.edge.config import ConfigWatcher, EdgeConfig, Polygon
from h2a.edge.events import Change, Event, EventEngine, EventUpdate
from h2a.edge.snapshot import render_snapshot
from h2a.edge.sources import Frame, FrameSource
from h2a.edge.telemetry import Stats, log_event
from h2a.runtime.engine import Detection, Engine

PEAK_RECAPTION_MIN_GAIN = 0.05  # a peak must beat the captioned score by this much to be re-captioned
CAPTION_QUEUE = 4
DRAIN_TIMEOUT_S = 30.0
FILE_QUEUE = 4


@dataclass
class PipelineOptions:
    alerts_dir: Path | None  # None = --dry-run
    max_frames: int = 0  # 0 = until the source ends or a signal arrives
    status_every: float = 10.0
    realtime: bool | None = None  # newest-frame-wins; default: on for live sources, off for files


@dataclass
class CaptionJob:
    change: Change
    event: Event
    frame: np.ndarray | None = None
    detection: Detection | None = None
    zones: list[str] = field(default_factory=list)


class LatestFrame:
    """A one-slot mailbox: `put` replaces an untaken frame (counted as dropped)."""

    def __init__(self, stats: Stats) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.stats = stats

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.stats.count("frames_dropped")
            self._frame = frame
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float = 0.5) -> Frame | bool | None:
        """-> a frame, None on timeout, False once closed and empty."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            if frame is None and self._closed:
                return False
            return frame

    def depth(self) -> int:
        return int(self._frame is not None)


class CaptionQueue:
    def __init__(self, stats: Stats, limit: int = CAPTION_QUEUE) -> None:
        self._jobs: deque[CaptionJob | None] = deque()
        self._cond = threading.Condition()
        self.limit, self.stats = limit, stats

    def put(self, job: CaptionJob | None) -> None:
        with self._cond:
            if job is not None and job.change is Change.PEAK and len(self._jobs) >= self.limit:
                for old in list(self._jobs):
                    if old is not None and old.change is Change.PEAK:
                        self._jobs.remove(old)
                        self.stats.count("captions_dropped")
                        break
            self._jobs.append(job)
            self._cond.notify()

    def get(self) -> CaptionJob | None:
        with self._cond:
            while not self._jobs:
                self._cond.wait()
            return self._jobs.popleft()

    def depth(self) -> int:
        with self._cond:
            return len(self._jobs)


def polygon_mask(polygons: tuple[Polygon, ...], width: int, height: int) -> np.ndarray | None:
    if not polygons:
        return None
    mask = np.zeros((height, width), np.uint8)
    for poly in polygons:
        pts = np.array([[x * width, y * height] for x, y in poly.points], np.int32)
        cv2.fillPoly(mask, [pts], 255)
    return mask.astype(bool)


def zones_of(
    zones: tuple[Polygon, ...], boxes: list[tuple[np.ndarray, np.ndarray]], width: int, height: int
) -> list[str]:
    hits = []
    for zone in zones:
        contour = np.array([[x * width, y * height] for x, y in zone.points], np.float32)
        for subject, _ in boxes:
            cx, cy = float(subject[0] + subject[2]) / 2, float(subject[1] + subject[3]) / 2
            if cv2.pointPolygonTest(contour, (cx, cy), False) >= 0:
                hits.append(zone.name)
                break
    return hits


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        source: FrameSource,
        watcher: ConfigWatcher,
        options: PipelineOptions,
        model_sha256: str,
    ) -> None:
        self.engine, self.source, self.watcher, self.options = engine, source, watcher, options
        self.config: EdgeConfig = watcher.config
        self.model_sha256 = model_sha256
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.events = EventEngine(self.config.thresholds)
        self.captions = CaptionQueue(self.stats)
        self.writes: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        realtime = source.spec.live if options.realtime is None else options.realtime
        self.latest = LatestFrame(self.stats) if realtime else None
        self.file_frames: queue.Queue[Frame | None] = queue.Queue(maxsize=FILE_QUEUE)
        self._mask: np.ndarray | None = None
        self._mask_key: tuple[int, int] | None = None
        self.error: BaseException | None = None

    # ---- threads ---------------------------------------------------------------------------------
    def _capture(self) -> None:
        try:
            for frame in self.source:
                self.stats.count("frames_read")
                if self.latest is not None:
                    self.latest.put(frame)
                else:
                    while not self.stop_event.is_set():
                        try:
                            self.file_frames.put(frame, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                if self.stop_event.is_set():
                    break
        except BaseException as err:  # reported by the main thread
            self.error = err
        finally:
            if self.latest is not None:
                self.latest.close()
            else:
                while True:
                    try:
                        self.file_frames.put(None, timeout=0.2)
                        break
                    except queue.Full:
                        if self.stop_event.is_set():
                            break

    def _next_frame(self) -> Frame | bool | None:
        if self.latest is not None:
            return self.latest.get()
        try:
            frame = self.file_frames.get(timeout=0.5)
        except queue.Empty:
            return None
        return False if frame is None else frame

    def _caption_worker(self) -> None:
        while True:
            job = self.captions.get()
            if job is None:
                self.writes.put(None)
                return
            try:
                self._caption(job)
            except Exception as err:  # a failed caption must not stop detection
                self.stats.count("caption_errors")
                log_event("caption_failed", logging.ERROR, anomaly=job.event.anomaly, error=repr(err))

    def _caption(self, job: CaptionJob) -> None:
        if job.change is Change.CLOSED:
            self.writes.put(("close", (id(job.event), job.event.end)))
            return
        assert job.detection is not None and job.frame is not None
        started = time.perf_counter()
        explanation = self.engine.explain(job.detection)
        self.stats.time("caption", time.perf_counter() - started)
        self.stats.count("captions")
        size = self.engine.manifest.preprocess.input_size
        boxes = job.detection.frame_boxes(size)
        triplets = [
            {
                "subject": t.subject,
                "action": t.action,
                "object": t.object,
                "score": round(t.score, 4),
                "subject_box": [round(float(v), 1) for v in s],
                "object_box": [round(float(v), 1) for v in o],
            }
            for t, (s, o) in zip(job.detection.triplets, boxes, strict=True)
        ]
        f = explanation.fields
        alert = Alert(
            camera=self.config.camera.name,
            anomaly=job.event.anomaly,
            start_time=job.event.start,
            peak_score=job.event.peak_score,
            peak_time=job.event.peak_time,
            what=f.what,
            who=f.who,
            location=f.where,
            caption=f.total or explanation.text,
            triplets=triplets,
            zones=job.zones,
            model_sha256=self.model_sha256,
            config_version=self.config.version,
        )
        labels = [(s, o, t.words) for t, (s, o) in zip(job.detection.triplets, boxes, strict=True)]
        title = f"{job.event.anomaly} {job.event.peak_score:.2f}  {self.config.camera.name}"
        jpeg = render_snapshot(job.frame, labels, title, alert.caption, self.config.alerts.jpeg_quality)
        self.writes.put(("write", (id(job.event), alert, jpeg)))

    def _writer(self) -> None:
        store: AlertStore | None = None
        written: dict[int, Alert] = {}
        last_retention = 0.0
        while True:
            item = self.writes.get()
            if item is None:
                break
            kind, payload = item
            if self.options.alerts_dir is None:
                if kind == "write":
                    alert = payload[1]
                    log_event(
                        "alert",
                        anomaly=alert.anomaly,
                        score=alert.peak_score,
                        caption=alert.caption,
                        stored="no (dry run)",
                    )
                continue
            try:
                if store is None:
                    store = AlertStore(self.options.alerts_dir)
                if kind == "write":
                    key, alert, jpeg = payload
                    previous = written.get(key)
                    if previous is not None:
                        alert.id, alert.uid, alert.end_time = previous.id, previous.uid, previous.end_time
                    store.write(alert, jpeg)
                    written[key] = alert
                    self.stats.count("alerts_written")
                    log_event(
                        "alert_written",
                        id=alert.id,
                        anomaly=alert.anomaly,
                        score=alert.peak_score,
                        caption=alert.caption,
                    )
                else:
                    key, end = payload
                    done = written.get(key)
                    if done is not None and done.id is not None:
                        done.end_time = end
                        store.close_alert(done.id, end)
                if time.monotonic() - last_retention > 60:
                    a = self.config.alerts
                    store.enforce_retention(a.retention_days * 86400, a.max_disk_mb * 1e6)
                    last_retention = time.monotonic()
            except Exception as err:  # read-only folder, full disk, locked database: log, count, go on
                self.stats.count("alert_errors")
                log_event(
                    "alert_not_written",
                    logging.ERROR,
                    folder=str(self.options.alerts_dir),
                    error=(str(err).splitlines() or [repr(err)])[0],
                )
                if isinstance(err, StoreError):
                    store = None  # could not open: try again with the next alert
        if store is not None:
            store.close()

    # ---- main loop -------------------------------------------------------------------------------
    def run(self) -> Stats:
        threads = [
            threading.Thread(target=t, name=n, daemon=True)
            for t, n in (
                (self._capture, "capture"),
                (self._caption_worker, "caption"),
                (self._writer, "alerts"),
            )
        ]
        for t in threads:
            t.start()
        last_status = time.monotonic()
        last_t = 0.0
        processed = 0
        cam = self.config.camera
        last_frame_time = 0.0
        while not self.stop_event.is_set():
            frame = self._next_frame()
            if frame is False:
                break
            if frame is None or not isinstance(frame, Frame):
                continue
            if frame.index % cam.frame_stride:
                continue
            if cam.fps_cap > 0:
                wait = last_frame_time + 1.0 / cam.fps_cap - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                last_frame_time = time.monotonic()
            self._process(frame)
            last_t = frame.timestamp
            processed += 1
            if self.options.max_frames and processed >= self.options.max_frames:
                break
            if time.monotonic() - last_status >= self.options.status_every:
                self._status()
                self._reload()
                last_status = time.monotonic()
        self.stop_event.set()
        for update in self.events.close_all(last_t):
            self._dispatch(update, None, None)
        self.captions.put(None)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        for t in threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        self._status()
        if self.error is not None:
            raise self.error
        return self.stats

    def _process(self, frame: Frame) -> None:
        image = frame.image
        h, w = image.shape[:2]
        if self.config.masks:
            if self._mask_key != (w, h):
                self._mask, self._mask_key = polygon_mask(self.config.masks, w, h), (w, h)
            image = image.copy()
            image[self._mask] = self.engine.manifest.preprocess.pad_value
        started = time.perf_counter()
        score = self.config.detection.triplet_score
        detection = self.engine.detect(image, score if score >= 0 else None)
        self.stats.time("detect", time.perf_counter() - started)
        self.stats.count("frames_processed")
        started = time.perf_counter()
        for update in self.events.update(frame.timestamp, detection.anomaly, frame.index):
            self._dispatch(update, frame.image, detection)
        self.stats.time("events", time.perf_counter() - started)

    def _dispatch(self, update: EventUpdate, image: np.ndarray | None, detection: Detection | None) -> None:
        event = update.event
        if update.change is Change.OPENED:
            log_event("event_opened", anomaly=event.anomaly, score=event.peak_score, t=event.start)
        elif update.change is Change.CLOSED:
            log_event("event_closed", anomaly=event.anomaly, peak=event.peak_score, t=event.end or 0.0)
            self.captions.put(CaptionJob(Change.CLOSED, event))
            return
        elif event.peak_score < event.captioned_score + PEAK_RECAPTION_MIN_GAIN:
            return
        event.captioned_score = event.peak_score
        assert image is not None and detection is not None
        size = self.engine.manifest.preprocess.input_size
        zones = zones_of(self.config.zones, detection.frame_boxes(size), image.shape[1], image.shape[0])
        self.captions.put(CaptionJob(update.change, event, image.copy(), detection, zones))

    def _status(self) -> None:
        snap = self.stats.snapshot()
        snap["caption_queue"] = self.captions.depth()
        snap["frame_slot"] = self.latest.depth() if self.latest is not None else self.file_frames.qsize()
        snap["reconnects"] = self.source.reconnects
        snap["bad_frames"] = self.source.bad_frames
        log_event("status", **snap)

    def _reload(self) -> None:
        config, error = self.watcher.poll()
        if error is not None:
            log_event("config_rejected", logging.ERROR, error=error, kept=self.config.version)
        elif config is not None:
            self.config = config
            self.events.set_thresholds(config.thresholds)
            self._mask_key = None
            log_event("config_reloaded", version=config.version)
