"""Structured logs (logfmt lines) and the running statistics behind the status line."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime

import numpy as np

LOG = logging.getLogger("h2a.edge")


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", None) or {}
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"event={record.getMessage()}"]
        for key, value in fields.items():
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            parts.append(f'{key}="{text}"' if (" " in text or "=" in text or not text) else f"{key}={text}")
        return " ".join(parts)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger("h2a")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def iso_time(t: float) -> str:
    """Epoch seconds -> local ISO 8601 with its UTC offset, as a person reads a log line."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    log_fields(event, fields, level)


def log_fields(event: str, fields: Mapping[str, object], level: int = logging.INFO) -> None:
    """`log_event` for fields gathered in a mapping (a key may be named like a parameter)."""
    LOG.log(level, event, extra={"fields": dict(fields)})


class Stats:
    """Per-stage latencies (last 1,000 samples each) and counters, shared by the pipeline threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency: dict[str, deque[float]] = {}
        self.counters: dict[str, int] = {}
        self.touched: dict[str, float] = {}  # counter -> wall-clock time of its last count
        self.started = time.monotonic()

    def time(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.latency.setdefault(stage, deque(maxlen=1000)).append(seconds)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n
            self.touched[name] = time.time()

    def get(self, name: str) -> int:
        with self._lock:
            return self.counters.get(name, 0)

    def percentiles(self) -> dict[str, tuple[float, float]]:
        with self._lock:
            return {
                k: (float(np.percentile(v, 50)) * 1000, float(np.percentile(v, 95)) * 1000)
                for k, v in self.latency.items()
                if v
            }

    def snapshot(self) -> dict[str, object]:
        elapsed = max(1e-9, time.monotonic() - self.started)
        with self._lock:
            counters = dict(self.counters)
            last_frame = self.touched.get("frames_processed")
        out: dict[str, object] = {"fps": counters.get("frames_processed", 0) / elapsed, **counters}
        out["last_frame_at"] = last_frame  # wall clock; None before the first frame
        for stage, (p50, p95) in self.percentiles().items():
            out[f"{stage}_p50_ms"], out[f"{stage}_p95_ms"] = p50, p95
        return out
