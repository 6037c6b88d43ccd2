"""The frame pipeline: capture -> detect -> events -> caption worker -> alert writer.

Four threads, each owning one thing: capture reads the source into a frame feed
(`h2a.edge.queues`); the main loop detects, runs the event logic and hands caption jobs on;
the caption worker (`h2a.edge.captioning`) captions and renders snapshots; the alert writer
(`h2a.edge.alert_writer`) owns the store. Detection never waits for captions.

`build_pipeline` assembles it from a bundle path's engine, a source spec and a config watcher;
`edge-run` and `edge-bench` both use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from h2a.edge.alert_writer import AlertWriter
from h2a.edge.arming import decide
from h2a.edge.captioning import CaptionWorker
from h2a.edge.config import ConfigWatcher, EdgeConfig
from h2a.edge.events import Change, EventEngine, EventUpdate
from h2a.edge.evidence import EvidenceRecorder
from h2a.edge.mqtt_forward import MqttForwarder
from h2a.edge.queues import CaptionJob, CaptionQueue, FrameQueue
from h2a.edge.sd_notify import Notifier
from h2a.edge.sources import Frame, FrameSource, SourceSpec
from h2a.edge.status_file import write_status
from h2a.edge.telemetry import Stats, iso_time, log_event, log_fields
from h2a.edge.zones import Masker, zones_of
from h2a.runtime.engine import Detection, Engine, PendingDetection

#: A peak must beat the score of the last caption by this much to be captioned again.
PEAK_RECAPTION_MIN_GAIN = 0.05
#: After the source ends, how long the caption worker and the writer get to finish their queues.
DRAIN_TIMEOUT_S = 30.0
#: Beyond the forwarder's own drain time, how long the pipeline waits for it to hang up.
FORWARDER_JOIN_SLACK_S = 15.0


@dataclass
class PipelineOptions:
    alerts_dir: Path | None  # None = --dry-run
    max_frames: int = 0  # 0 = until the source ends or a signal arrives
    status_every: float = 10.0
    realtime: bool | None = None  # newest-frame-wins; default: on for live sources, off for files
    record: bool = False  # evidence clips even where the config does not turn them on


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        source: FrameSource,
        watcher: ConfigWatcher,
        options: PipelineOptions,
        model_sha256: str,
        stop_event: threading.Event,
    ) -> None:
        """`stop_event` is the one the source polls: setting it stops capture and the loop."""
        self.engine, self.source, self.watcher, self.options = engine, source, watcher, options
        self.config: EdgeConfig = watcher.config
        self.model_sha256 = model_sha256
        self.stats = Stats()
        self.stop_event = stop_event
        self.events = EventEngine(self.config.thresholds)
        self.captions = CaptionQueue(self.stats)
        forwarding = bool(self.config.mqtt.host) and options.alerts_dir is not None
        self.writer = AlertWriter(
            options.alerts_dir, lambda: self.config.alerts, self.stats, outbox=forwarding
        )
        self.forwarder: MqttForwarder | None = None
        if forwarding:
            assert options.alerts_dir is not None
            self.forwarder = MqttForwarder(
                options.alerts_dir, self.config.mqtt, self.config.camera.name, self.stats
            )
        self.captioner = CaptionWorker(
            engine,
            self.captions,
            self.writer,
            lambda: self.config,
            model_sha256,
            source.spec.name(),
            self.stats,
        )
        realtime = source.spec.live if options.realtime is None else options.realtime
        make_queue = FrameQueue.live if realtime else FrameQueue.file
        self.frames = make_queue(self.stats, stop_event)
        self.masker = Masker(engine.preprocess.pad_value)
        recording = (options.record or self.config.record.enabled) and options.alerts_dir is not None
        self.recorder = EvidenceRecorder(self.config.record) if recording else None
        self._position_offset = 0.0  # frame timestamp - its position in the source (constant per source)
        self._in_flight: deque[tuple[Frame, PendingDetection, float]] = deque()  # submitted, not finished
        self.error: BaseException | None = None
        self.notifier = Notifier()  # systemd Type=notify: READY, WATCHDOG, STOPPING
        self.reload_requested = threading.Event()  # set by SIGHUP (edge-run)

    def _capture(self) -> None:
        try:
            for frame in self.source:
                self.stats.count("frames_read")
                self.frames.put(frame)
                if self.stop_event.is_set():
                    break
        except BaseException as err:  # reported by the main thread
            self.error = err
        finally:
            self.frames.close()

    def run(self) -> Stats:
        threads = [
            threading.Thread(target=target, name=name, daemon=True)
            for target, name in (
                (self._capture, "capture"),
                (self.captioner.run, "caption"),
                (self.writer.run, "alerts"),
            )
        ]
        if self.forwarder is not None:
            forwarder = threading.Thread(target=self.forwarder.run, name="mqtt", daemon=True)
            forwarder.start()
        for t in threads:
            t.start()
        last_status = time.monotonic()
        last_t = 0.0
        processed = 0
        last_frame_time = 0.0
        self.notifier.ready(f"watching {self.source.spec.name()}")
        while not self.stop_event.is_set():
            # every turn, frames or not (get() wakes every POLL_S): the watchdog ping, a reload
            # asked for by SIGHUP, the status line and the config file's own changes
            self.notifier.watchdog()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload(force=True)
            if time.monotonic() - last_status >= self.options.status_every:
                self._status()
                self._reload()
                last_status = time.monotonic()
            frame = self.frames.get()
            if frame is False:
                break
            if not isinstance(frame, Frame):
                self._finish_in_flight()  # no new frame: a frame still on the GPU must not wait
                continue
            cam = self.config.camera
            if frame.index % cam.frame_stride:
                continue
            if cam.fps_cap > 0:
                wait = last_frame_time + 1.0 / cam.fps_cap - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                last_frame_time = time.monotonic()
            self._submit(frame)
            last_t = frame.timestamp
            processed += 1
            if self.options.max_frames and processed >= self.options.max_frames:
                break
        self._finish_in_flight()
        self.notifier.stopping()
        self.stop_event.set()
        for update in self.events.close_all(last_t):
            self._dispatch(update, None, None)
        for clip in self.recorder.flush() if self.recorder is not None else []:
            self.captions.put(clip)
        self.captions.put(None)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        for t in threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        if self.forwarder is not None:  # after the writer: what it stored last is sent too
            self.forwarder.stop.set()
            forwarder.join(timeout=self.forwarder.drain_s + FORWARDER_JOIN_SLACK_S)
        self._status(running=False)
        if self.error is not None:
            raise self.error
        return self.stats

    def _submit(self, frame: Frame) -> None:
        """Start detecting `frame`; finish the frames before it beyond what the engine overlaps
        (on the GPU, frame t+1's upload runs while frame t is inferred: `Engine.frames_ahead`)."""
        image = self.masker(frame.image, self.config.masks)
        started = time.perf_counter()
        score = self.config.detection.triplet_score
        pending = self.engine.submit(image, score if score >= 0 else None)
        self._in_flight.append((frame, pending, time.perf_counter() - started))
        while len(self._in_flight) > self.engine.frames_ahead:
            self._finish(*self._in_flight.popleft())

    def _finish_in_flight(self) -> None:
        while self._in_flight:
            self._finish(*self._in_flight.popleft())

    def _finish(self, frame: Frame, pending: PendingDetection, submit_s: float) -> None:
        self._position_offset = frame.timestamp - frame.position
        started = time.perf_counter()
        detection = self.engine.result(pending)
        self.stats.time("detect", submit_s + time.perf_counter() - started)
        self.stats.count("frames_processed")
        started = time.perf_counter()
        finished = self.recorder.add(frame.timestamp, frame.image) if self.recorder is not None else []
        for update in self.events.update(frame.timestamp, detection.anomaly, frame.index):
            self._dispatch(update, frame.image, detection)
        for clip in finished:
            self.captions.put(clip)
        self.stats.time("events", time.perf_counter() - started)

    def _dispatch(self, update: EventUpdate, image: np.ndarray | None, detection: Detection | None) -> None:
        event = update.event
        if update.change is Change.CLOSED:
            event.end_position = (event.end or 0.0) - self._position_offset
            log_event(
                "event_closed",
                event_id=event.uid,
                anomaly=event.anomaly,
                peak=event.peak_score,
                end=iso_time(event.end or 0.0),
                alerted=event.alerted,
            )
            if event.alerted:
                self.captions.put(CaptionJob(Change.CLOSED, event))
                if self.recorder is not None:
                    self.recorder.stop(event.uid, event.end or 0.0)
            return
        if update.change is Change.OPENED:
            event.start_position = event.start - self._position_offset
            self.stats.count("events_opened")
            log_event(
                "event_opened",
                event_id=event.uid,
                anomaly=event.anomaly,
                score=event.peak_score,
                start=iso_time(event.start),
            )
        elif event.alerted and event.peak_score < event.captioned_score + PEAK_RECAPTION_MIN_GAIN:
            return
        assert image is not None and detection is not None
        boxes = detection.frame_boxes()
        change = update.change
        size = (image.shape[1], image.shape[0])
        if event.alerted:
            zones = zones_of(self.config.zones, boxes, *size)
        else:
            lasted = event.peak_time - event.start
            when = datetime.fromtimestamp(event.peak_time)
            verdict = decide(self.config, event.anomaly, event.peak_score, lasted, boxes, size, when)
            if not verdict.armed:
                if update.change is Change.OPENED:
                    self.stats.count("events_not_armed")
                    log_event(
                        "alert_withheld", event_id=event.uid, anomaly=event.anomaly, reason=verdict.reason
                    )
                return
            event.alerted, change, zones = (
                True,
                Change.OPENED,
                verdict.zones,
            )  # a first alert is never dropped
            if self.recorder is not None:
                self.recorder.start(event.uid, event.peak_time)
        event.captioned_score = event.peak_score
        # on the GPU the image tokens move into a buffer of their own, device to device
        kept = self.engine.keep_for_caption(detection)
        self.captions.put(CaptionJob(change, event, image.copy(), kept, zones))

    def _status(self, running: bool = True) -> None:
        snap = self.stats.snapshot()
        snap["caption_queue"] = self.captions.depth()
        snap["frame_slot"] = self.frames.depth()
        snap["reconnects"] = self.source.reconnects
        snap["freezes"] = self.source.freezes
        snap["bad_frames"] = self.source.bad_frames
        log_fields("status", snap)
        if self.options.alerts_dir is not None:
            about = {
                "camera": self.config.camera.name,
                "source": self.source.spec.name(),
                "config_version": self.config.version,
                "model_sha256": self.model_sha256,
                "forwarding": self.forwarder is not None,
            }
            try:
                write_status(self.options.alerts_dir, {**about, **snap}, running, self.options.status_every)
            except OSError as err:
                log_event("status_file_failed", logging.WARNING, error=str(err))

    def _reload(self, force: bool = False) -> None:
        config, error = self.watcher.poll(force)
        if error is not None:
            log_event("config_rejected", logging.ERROR, error=error, kept=self.config.version)
        elif config is not None:
            self.config = config
            self.events.set_thresholds(config.thresholds)
            # [camera]: stride, fps cap and name are read from self.config per frame; the capture's
            # watchdog and back-off settings are read by the source on every turn
            cam = config.camera
            self.source.freeze_timeout = cam.freeze_timeout
            self.source.reconnect_min, self.source.reconnect_max = cam.reconnect_min, cam.reconnect_max
            log_event("config_reloaded", version=config.version)


def build_pipeline(
    engine: Engine,
    spec: SourceSpec,
    watcher: ConfigWatcher,
    options: PipelineOptions,
    model_sha256: str,
) -> Pipeline:
    """The source and the pipeline share one stop event, made here before either exists."""
    stop = threading.Event()
    cam = watcher.config.camera
    source = FrameSource(spec, cam.freeze_timeout, cam.reconnect_min, cam.reconnect_max, stop=stop.is_set)
    return Pipeline(engine, source, watcher, options, model_sha256, stop)
