"""Evidence clips: what the camera saw from `pre` seconds before an alert to `post` seconds after
its event ended, as an MP4 beside the alert.

The detection loop keeps a bounded ring of the last `pre` seconds as downscaled JPEGs (a few
hundred kB, not raw frames); when an event raises its alert, a recording starts with a copy of
the ring and takes every later frame until `post` seconds after the event closes (at most
`max_length` seconds in all). The finished frames travel in order behind the alert to the alert
writer, which encodes the MP4 off the detection path and stores it atomically.
"""

from __future__ import annotations

import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from h2a.edge.config import RecordConfig

MP4_CODEC = "mp4v"  # in every OpenCV build; H.264 needs an FFmpeg build with an encoder
MIN_FPS = 1.0


@dataclass(frozen=True)
class SaveClip:
    """A finished recording for the alert writer: JPEG frames with their timestamps."""

    uid: str  # the event's uid
    frames: list[tuple[float, bytes]]

    @property
    def fps(self) -> float:
        if len(self.frames) < 2:
            return MIN_FPS
        span = self.frames[-1][0] - self.frames[0][0]
        return max(MIN_FPS, (len(self.frames) - 1) / span) if span > 0 else MIN_FPS


@dataclass
class _Recording:
    frames: list[tuple[float, bytes]]
    started: float
    until: float | None = None  # set when the event closes
    full: bool = False


@dataclass
class EvidenceRecorder:
    config: RecordConfig
    ring: deque[tuple[float, bytes]] = field(default_factory=deque)
    active: dict[str, _Recording] = field(default_factory=dict)
    last_kept: float = float("-inf")

    def add(self, t: float, image: np.ndarray) -> list[SaveClip]:
        """Every processed frame: keep it (at most `fps` a second) and return what finished."""
        c = self.config
        if t - self.last_kept >= 1.0 / c.fps:
            self.last_kept = t
            small = cv2.resize(image, None, fx=c.scale, fy=c.scale, interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, c.jpeg_quality])
            if ok:
                entry = (t, jpeg.tobytes())
                self.ring.append(entry)
                for rec in self.active.values():
                    if not rec.full:
                        rec.frames.append(entry)
                        rec.full = t - rec.started >= c.max_length
        while self.ring and self.ring[0][0] < t - c.pre:
            self.ring.popleft()
        done = [uid for uid, rec in self.active.items() if rec.until is not None and t >= rec.until]
        return [SaveClip(uid, self.active.pop(uid).frames) for uid in done]

    def start(self, uid: str, t: float) -> None:
        """The event `uid` raised its alert at `t`: record from `pre` seconds before."""
        frames = list(self.ring)
        self.active[uid] = _Recording(frames, frames[0][0] if frames else t)

    def stop(self, uid: str, end: float) -> None:
        if uid in self.active:
            self.active[uid].until = end + self.config.post

    def flush(self) -> list[SaveClip]:
        """End of the run: every recording ends now."""
        out = [SaveClip(uid, rec.frames) for uid, rec in self.active.items()]
        self.active.clear()
        return out


def encode_mp4(clip: SaveClip) -> bytes:
    """The recording as MP4 bytes (frames decoded from JPEG, written by OpenCV)."""
    images: list[np.ndarray] = []
    for _, jpeg in clip.frames:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            images.append(image)
    if not images:
        raise ValueError("an evidence clip without frames")
    h, w = images[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*MP4_CODEC), clip.fps, (w, h))
        if not writer.isOpened():
            raise OSError("OpenCV cannot write MP4 here")
        for im in images:
            writer.write(im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h)))
        writer.release()
        return path.read_bytes()
