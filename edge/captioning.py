"""The caption worker: turns event changes into alerts, beside detection (never in its way).

An opening or a new peak gets `cap_encoder` + greedy `dec_step` on the frame that caused it, a
snapshot with the triplets' boxes and the caption drawn, and goes to the alert writer; a closing
only tells the writer when the event ended. A failed caption is logged and counted: detection
goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from h2a.edge.alert_writer import AlertWriter, CloseAlert, WriteAlert
from h2a.edge.alerts import build_alert
from h2a.edge.config import EdgeConfig
from h2a.edge.events import Change
from h2a.edge.evidence import SaveClip
from h2a.edge.queues import CaptionJob, CaptionQueue
from h2a.edge.snapshot import render_snapshot
from h2a.edge.telemetry import Stats, log_event
from h2a.runtime.engine import Engine


class CaptionWorker:
    def __init__(
        self,
        engine: Engine,
        jobs: CaptionQueue,
        writer: AlertWriter,
        config: Callable[[], EdgeConfig],
        model_sha256: str,
        source: str,
        stats: Stats,
    ) -> None:
        """`config` returns the config in force (it may be reloaded while the worker runs);
        `source` names the source on every alert."""
        self.engine, self.jobs, self.writer, self.config = engine, jobs, writer, config
        self.model_sha256, self.source, self.stats = model_sha256, source, stats

    def run(self) -> None:
        """Until a None job: then the writer is told to finish too."""
        while (job := self.jobs.get()) is not None:
            if isinstance(job, SaveClip):  # behind its event's alert, in order
                self.writer.put(job)
                continue
            try:
                self._caption(job)
            except Exception as err:  # a failed caption must not stop detection
                self.stats.count("caption_errors")
                log_event(
                    "caption_failed",
                    logging.ERROR,
                    event_id=job.event.uid,
                    anomaly=job.event.anomaly,
                    error=repr(err),
                )
        self.writer.put(None)

    def _caption(self, job: CaptionJob) -> None:
        if job.change is Change.CLOSED:
            assert job.event.end is not None
            self.writer.put(CloseAlert(job.event.uid, job.event.end, job.event.end_position))
            return
        assert job.detection is not None and job.frame is not None
        started = time.perf_counter()
        explanation = self.engine.explain(job.detection)
        self.stats.time("caption", time.perf_counter() - started)
        self.stats.count("captions")
        config = self.config()
        alert = build_alert(
            job.event,
            job.detection,
            explanation,
            camera=config.camera.name,
            zones=job.zones,
            model_sha256=self.model_sha256,
            config_version=config.version,
            source=self.source,
        )
        labels = [
            (s, o, t.words)
            for t, (s, o) in zip(job.detection.triplets, job.detection.frame_boxes(), strict=True)
        ]
        title = f"{alert.anomaly} {alert.peak_score:.2f}  {alert.camera}"
        jpeg = render_snapshot(job.frame, labels, title, alert.caption, config.alerts.jpeg_quality)
        self.writer.put(WriteAlert(alert, jpeg))
