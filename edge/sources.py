"""Frame sources: USB camera index, V4L2 device, RTSP/HTTP URL, GStreamer pipeline, video file,
image folder. Live sources reconnect with exponential back-off when they drop or freeze;
files and folders end.

PyPI's OpenCV wheels are built without GStreamer. On a Jetson, use JetPack's system OpenCV (a
venv made with --system-site-packages) for CSI cameras; `gstreamer_available()` reads
`cv2.getBuildInformation()` so the error says exactly that.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from h2a.runtime.errors import H2AError

log = logging.getLogger("h2a.edge.sources")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
#: Open and read time-out of network streams (OpenCV's FFmpeg backend), so a read cannot hang forever.
STREAM_TIMEOUT_S = 5.0
#: A back-off sleep looks at the stop flag this often, so a signal is not kept waiting.
STOP_POLL_S = 0.05
#: Seconds between the timestamps of an image folder's images (one image = one second).
FOLDER_FRAME_INTERVAL_S = 1.0
#: Frame rate assumed for a video file that reports none.
FALLBACK_FPS = 25.0


class SourceError(H2AError):
    exit_code = 3


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # camera | device | url | gstreamer | file | folder
    target: str | int
    live: bool

    def describe(self) -> str:
        return f"{self.kind} {self.target}"

    def name(self) -> str:
        """How alerts and edge-tune's score caches name this source: a file's or folder's resolved
        path (so an alert can be matched to a replayed clip), a URL as given, else `describe()`."""
        if self.kind in ("file", "folder"):
            return str(Path(str(self.target)).resolve())
        return str(self.target) if self.kind == "url" else self.describe()


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    match = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(match and match.group(1).upper().startswith("YES"))


def parse_source(camera: int | None, source: str | None) -> SourceSpec:
    if camera is not None:
        return SourceSpec("camera", camera, True)
    assert source is not None
    if source.startswith(("rtsp://", "rtsps://", "http://", "https://", "rtmp://")):
        return SourceSpec("url", source, True)
    if "!" in source and ("appsink" in source or "src" in source):
        if not gstreamer_available():
            raise SourceError(
                "this OpenCV has no GStreamer support (PyPI wheels never do); on a Jetson use JetPack's "
                "OpenCV: create the venv with --system-site-packages and do not pip-install opencv"
            )
        return SourceSpec("gstreamer", source, True)
    path = Path(source)
    if source.startswith("/dev/video"):
        return SourceSpec("device", source, True)
    if path.is_dir():
        return SourceSpec("folder", source, False)
    if path.is_file():
        return SourceSpec("file", source, False)
    raise SourceError(f"{source}: no such file, folder, device or URL")


def _open_capture(spec: SourceSpec, timeout_s: float = STREAM_TIMEOUT_S) -> cv2.VideoCapture:
    """Open a capture; network streams get OpenCV's open/read time-outs so a frozen camera cannot
    block a read forever (the freeze check then reconnects)."""
    if spec.kind == "url":
        ms = int(timeout_s * 1000)
        return cv2.VideoCapture(
            str(spec.target),
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
        )
    if spec.kind == "gstreamer":
        return cv2.VideoCapture(str(spec.target), cv2.CAP_GSTREAMER)
    if spec.kind == "device":
        return cv2.VideoCapture(str(spec.target), cv2.CAP_V4L2)
    return cv2.VideoCapture(spec.target)


@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    index: int  # frames read from the source so far
    timestamp: float  # wall-clock seconds: live sources read it, files add media time to their start
    position: float = 0.0  # seconds into the source: video position of a file, since opening for live


class FrameSource:
    """Iterate frames; on a live source, drops and freezes reconnect with back-off (logged)."""

    def __init__(
        self,
        spec: SourceSpec,
        freeze_timeout: float = 5.0,
        reconnect_min: float = 1.0,
        reconnect_max: float = 30.0,
        stop: Callable[[], bool] = lambda: False,
        opener: Callable[[SourceSpec], cv2.VideoCapture] = _open_capture,
    ) -> None:
        self.spec, self.freeze_timeout = spec, freeze_timeout
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self.stop, self.opener = stop, opener
        self.reconnects = 0
        self.bad_frames = 0
        self.freezes = 0  # watchdog trips: a hung read or a frozen picture

    def __iter__(self) -> Iterator[Frame]:
        if self.spec.kind == "folder":
            yield from self._folder()
        elif self.spec.live:
            yield from self._live()
        else:
            yield from self._file()

    def _folder(self) -> Iterator[Frame]:
        files = sorted(p for p in Path(str(self.spec.target)).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{self.spec.target}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        start = time.time()
        for index, path in enumerate(files):
            if self.stop():
                return
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.bad_frames += 1
                log.warning("skipping unreadable image %s", path)
                continue
            position = index * FOLDER_FRAME_INTERVAL_S
            yield Frame(image, index, start + position, position)

    def _file(self) -> Iterator[Frame]:
        cap = self.opener(self.spec)
        if not cap.isOpened():
            raise SourceError(f"{self.spec.target}: cannot be opened as a video")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        fps = fps if fps > 0 else FALLBACK_FPS
        index, start = 0, time.time()
        try:
            while not self.stop():
                ok, image = cap.read()
                if not ok:
                    return
                if not _valid(image):
                    self.bad_frames += 1
                    index += 1
                    continue
                yield Frame(image, index, start + index / fps, index / fps)
                index += 1
        finally:
            cap.release()

    def _live(self) -> Iterator[Frame]:
        """Each connection reads in its own thread (`_Reader`), so a read that hangs (USB, V4L2,
        GStreamer, a stalled stream) cannot stall this generator: with no new picture for
        `freeze_timeout` - nothing arrives, or the same picture again and again (a frozen encoder) -
        the reader is abandoned (its thread ends whenever its read returns) and a fresh capture is
        opened with back-off."""
        delay = self.reconnect_min
        index = 0
        opened_at = time.time()
        while not self.stop():
            cap = self.opener(self.spec)
            if not cap.isOpened():
                cap.release()
                log.warning("source %s unavailable; retrying in %.1f s", self.spec.describe(), delay)
                self._sleep(delay)
                delay = min(self.reconnect_max, delay * 2)
                self.reconnects += 1
                continue
            log.info("source %s opened", self.spec.describe())
            reader = _Reader(cap)
            last_new = time.monotonic()  # when the picture last changed
            last_digest: bytes | None = None
            reason = ""
            try:
                while not self.stop():
                    item = reader.next(min(STOP_POLL_S * 4, self.freeze_timeout))
                    now = time.monotonic()
                    if item is _DROPPED:
                        reason = "dropped"
                        break
                    if item is _BAD:
                        self.bad_frames += 1
                    elif isinstance(item, np.ndarray):
                        digest = _digest(item)
                        if digest != last_digest:
                            last_digest, last_new, delay = digest, now, self.reconnect_min
                        now_wall = time.time()
                        yield Frame(item, index, now_wall, now_wall - opened_at)
                        index += 1
                    if now - last_new > self.freeze_timeout:
                        self.freezes += 1
                        reason = f"froze for {now - last_new:.1f} s" + (
                            "" if reader.reading_since(now) is None else " (a read is hanging)"
                        )
                        break
            finally:
                reader.abandon()
            if reason:
                log.warning("source %s %s; reconnecting", self.spec.describe(), reason)
            self.reconnects += 1
            self._sleep(delay)
            delay = min(self.reconnect_max, delay * 2)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop() and time.monotonic() < end:
            time.sleep(max(0.0, min(STOP_POLL_S, end - time.monotonic())))


_DROPPED = object()  # the reader's read failed: the stream ended or broke
_EMPTY = object()  # nothing new in the reader's box
_BAD = object()  # a read that succeeded but returned no usable picture
#: Pixels the frozen-picture check hashes: every DIGEST_STEP-th row and column (cheap at any size).
DIGEST_STEP = 8


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(
        np.ascontiguousarray(image[::DIGEST_STEP, ::DIGEST_STEP]).data, digest_size=8
    ).digest()


_READERS: list[threading.Thread] = []  # every reader thread started, for `hung_readers`


def hung_readers() -> int:
    """Reader threads still inside a read that never returned (abandoned by the watchdog). Python
    cannot end such a thread: if it wakes while the interpreter shuts down, the C++ read is unwound
    and the process aborts, so edge-run ends with os._exit when any remain (everything else closed)."""
    return sum(1 for t in _READERS if t.is_alive())


class _Reader:
    """One capture read in a daemon thread, handing each picture over through a one-slot box (the
    reader waits while the box is full, so no frame is lost here; the pipeline's own queue decides
    what a live source may drop)."""

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self.cap = cap
        self._cond = threading.Condition()
        self._item: object = _EMPTY
        self._abandoned = False
        self._read_started: float | None = None
        self.thread = threading.Thread(target=self._run, name="capture-read", daemon=True)
        _READERS[:] = [t for t in _READERS if t.is_alive()]
        _READERS.append(self.thread)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._abandoned:
                        return
                    self._read_started = time.monotonic()
                ok, image = self.cap.read()  # may hang: then only this thread waits
                with self._cond:
                    self._read_started = None
                    while self._item is not _EMPTY and not self._abandoned:
                        self._cond.wait()
                    if self._abandoned:
                        return
                    self._item = _DROPPED if not ok else image if _valid(image) else _BAD
                    self._cond.notify_all()
                    if not ok:
                        return
        finally:
            self.cap.release()

    def next(self, timeout: float) -> object:
        """The next picture, _BAD, _DROPPED, or _EMPTY when nothing came within `timeout`."""
        with self._cond:
            if self._item is _EMPTY:
                self._cond.wait(timeout)
            item = self._item
            if item is not _DROPPED:  # a drop stays
                self._item = _EMPTY
                self._cond.notify_all()
            return item

    def reading_since(self, now: float) -> float | None:
        with self._cond:
            return None if self._read_started is None else now - self._read_started

    def abandon(self) -> None:
        """Stop using this capture; a hung read keeps its thread until it returns (then it ends)."""
        with self._cond:
            self._abandoned = True
            self._cond.notify_all()


def _valid(image: np.ndarray | None) -> bool:
    return image is not None and image.ndim == 3 and image.shape[2] == 3 and image.size > 0
