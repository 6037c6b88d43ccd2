"""The pictures and clips the review page serves: found by alert id, never by a path a browser
names; thumbnails made on request; evidence clips turned into WebM (VP8) for the `<video>` tag.

The device records MPEG-4 Part 2 (`mp4v`), which every OpenCV build writes cheaply but no browser
plays; VP8 plays in every browser but costs ~30x the encoding time, so it is made here, when
someone asks, rather than on the device's alert path. Results are cached (in memory for thumbnails,
in the server's own temporary folder for clips) by the file's name and size: a re-captioned alert
gets a new snapshot name, so a stale entry is never served.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from h2a.edge.alert_store import CLIP_DIR, SNAPSHOT_DIR
from h2a.edge.alerts import Alert

THUMB_WIDTH = 320
THUMB_QUALITY = 75
THUMB_CACHE = 256  # thumbnails kept in memory (~10 kB each)
WEB_CLIP_CACHE = 16  # transcoded clips kept on disk
WEB_CODEC = "VP80"
WEB_FPS_FALLBACK = 10.0


def member(folder: Path, relative: str | None, subdir: str) -> Path | None:
    """The store file a row names, if it really lies in the store's `subdir` (a tampered row that
    names `../x` or an absolute path gets None, as does a file that is gone)."""
    if not relative:
        return None
    base = (folder / subdir).resolve()
    path = (folder / relative).resolve()
    if path.parent != base or not path.is_file():
        return None
    return path


def snapshot_path(folder: Path, alert: Alert) -> Path | None:
    return member(folder, alert.snapshot, SNAPSHOT_DIR)


def clip_path(folder: Path, alert: Alert) -> Path | None:
    return member(folder, alert.clip, CLIP_DIR)


class MediaCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thumbs: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._clips: OrderedDict[tuple[str, int], Path] = OrderedDict()
        self._clip_locks: dict[tuple[str, int], threading.Lock] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="h2a-review-"))

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def thumbnail(self, path: Path) -> bytes:
        key = (path.name, path.stat().st_size)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path.name} is not a readable JPEG")
        h, w = image.shape[:2]
        if w > THUMB_WIDTH:
            image = cv2.resize(image, (THUMB_WIDTH, round(h * THUMB_WIDTH / w)), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
        if not ok:
            raise ValueError(f"cannot encode a thumbnail of {path.name}")
        data = jpeg.tobytes()
        with self._lock:
            self._thumbs[key] = data
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return data

    def web_clip(self, path: Path) -> Path:
        """The clip as VP8 WebM (made once per clip; concurrent requests wait for the one encode)."""
        key = (path.name, path.stat().st_size)
        with self._lock:
            if key in self._clips:
                self._clips.move_to_end(key)
                return self._clips[key]
            lock = self._clip_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._clips:
                    return self._clips[key]
            out = transcode_webm(path, self.folder / f"{path.stem}-{key[1]}.webm")
            with self._lock:
                self._clips[key] = out
                self._clip_locks.pop(key, None)
                while len(self._clips) > WEB_CLIP_CACHE:
                    _, old = self._clips.popitem(last=False)
                    old.unlink(missing_ok=True)
            return out


def transcode_webm(source: Path, out: Path) -> Path:
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise ValueError(f"cannot read the clip {source.name}")
    fps = cap.get(cv2.CAP_PROP_FPS) or WEB_FPS_FALLBACK
    tmp = out.with_name(out.name + ".part.webm")
    writer: cv2.VideoWriter | None = None
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*WEB_CODEC), fps, (w, h))
                if not writer.isOpened():
                    raise ValueError("this OpenCV build cannot write VP8 WebM")
            writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError(f"the clip {source.name} has no frames")
    tmp.replace(out)
    return out
