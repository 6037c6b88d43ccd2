"""The calibration set: representative frames, pre-processed as the runtime does, in one `.npz`.

INT8 ranges are only as good as the frames they come from, so frames are taken from the site's
own images, recordings or live camera, spread evenly over the source (not the first N of a
video, which are one scene), and near-duplicates are dropped (a parked camera repeats itself).

Frames are stored as the runtime's letterboxed uint8 RGB canvases (4x smaller than floats) and
normalised at use with the runtime's own `Preprocessor.normalise`, so graph inputs are
bit-identical to deployment. The file carries a format version and a sha256 of its frames, and
loading refuses a file whose frames do not match it.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from h2a.runtime.errors import InputError
from h2a.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, PAD_VALUE, Preprocessor

FORMAT, VERSION = "h2a.calib", 1
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
#: Frames whose 32x32 grey thumbnails differ by less than this mean absolute level (0-255) from
#: a frame already kept are near-duplicates (sensor noise and compression change ~1-2 levels).
DEDUPE_LEVEL = 3.0
THUMB = 32
#: Candidates read per wanted frame from a video, so that de-duplication still leaves enough.
OVERSAMPLE = 3


class CalibrationError(InputError):
    """A calibration set or quantization input that cannot be used."""


@dataclass(frozen=True)
class CalibrationSet:
    canvases: np.ndarray  # (N, S, S, 3) uint8 RGB, letterboxed exactly as the runtime does
    origins: list[str]  # where each frame came from ("file.mp4#frame=120", "images/a.jpg", ...)
    pad_value: int
    sha256: str

    @property
    def input_size(self) -> int:
        return int(self.canvases.shape[1])

    def __len__(self) -> int:
        return int(self.canvases.shape[0])

    def images(self, mean: list[float], std: list[float]) -> Iterator[np.ndarray]:
        """Each frame as the `hoi` graph's input (1, 3, S, S) float32, normalised by the bundle."""
        pre = Preprocessor(self.input_size, tuple(mean), tuple(std), self.pad_value)
        for canvas in self.canvases:
            yield pre.normalise(canvas).copy()

    def split(self, held_out_every: int) -> tuple[CalibrationSet, CalibrationSet]:
        """(calibration, held-out): every `held_out_every`-th frame is kept aside for measuring."""
        idx = np.arange(len(self))
        held = idx % held_out_every == held_out_every - 1
        return self._subset(idx[~held]), self._subset(idx[held])

    def _subset(self, idx: np.ndarray) -> CalibrationSet:
        canvases = self.canvases[idx]
        return CalibrationSet(
            canvases, [self.origins[i] for i in idx], self.pad_value, frames_sha256(canvases)
        )


def frames_sha256(canvases: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(str(canvases.shape).encode())
    digest.update(np.ascontiguousarray(canvases).tobytes())
    return digest.hexdigest()


def thumbnail(frame_bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


class Deduplicator:
    def __init__(self, level: float = DEDUPE_LEVEL) -> None:
        self.level = level
        self._kept: list[np.ndarray] = []
        self.dropped = 0

    def is_new(self, frame_bgr: np.ndarray) -> bool:
        thumb = thumbnail(frame_bgr)
        if any(float(np.abs(thumb - k).mean()) < self.level for k in self._kept):
            self.dropped += 1
            return False
        self._kept.append(thumb)
        return True


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over range(count), in order; all of them when fewer."""
    if count <= wanted:
        return list(range(count))
    return sorted({round(float(i)) for i in np.linspace(0, count - 1, wanted)})


def image_folder_frames(folder: Path, wanted: int) -> Iterator[tuple[str, np.ndarray]]:
    if not folder.is_dir():
        raise CalibrationError(f"--images {folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"--images {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for i in spread(len(files), wanted * OVERSAMPLE):
        frame = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if frame is not None:  # unreadable files are skipped, like a corrupt frame at run time
            yield str(files[i].relative_to(folder)), frame


def video_frames(path: Path, wanted: int) -> Iterator[tuple[str, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CalibrationError(f"--source {path}: cannot open this video")
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        picks = set(spread(count, wanted * OVERSAMPLE)) if count > 0 else None
        index = 0
        while True:
            if picks is not None and index not in picks:
                if not cap.grab():
                    break
            else:
                ok, frame = cap.read()
                if not ok:
                    break
                yield f"{path.name}#frame={index}", frame
            index += 1
    finally:
        cap.release()


def camera_frames(
    index: int, wanted: int, interval_s: float, clock: Callable[[], float] = time.monotonic
) -> Iterator[tuple[str, np.ndarray]]:
    """One frame every `interval_s` from a live camera; ends when the camera stops delivering."""
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise CalibrationError(f"--camera {index}: cannot open this camera")
    try:
        last = -float("inf")
        taken = 0
        while taken < wanted * OVERSAMPLE:
            ok, frame = cap.read()
            if not ok:
                break
            now = clock()
            if now - last >= interval_s:
                last = now
                taken += 1
                yield f"camera{index}@{now:.1f}s", frame
    finally:
        cap.release()


def collect(
    frames: Iterator[tuple[str, np.ndarray]],
    wanted: int,
    input_size: int,
    pad_value: int = PAD_VALUE,
    dedupe_level: float = DEDUPE_LEVEL,
    progress: Callable[[int], None] | None = None,
) -> tuple[CalibrationSet, int]:
    """Letterbox up to `wanted` distinct frames; returns the set and the number of duplicates
    dropped. When the source holds more distinct candidates than wanted, an even subset is kept."""
    pre = Preprocessor(input_size, IMAGENET_MEAN, IMAGENET_STD, pad_value)
    dedupe = Deduplicator(dedupe_level)
    canvases, origins = [], []
    for origin, frame in frames:
        if frame.ndim != 3 or frame.shape[2] != 3 or not dedupe.is_new(frame):
            continue
        canvas, _ = pre.letterbox(frame)
        canvases.append(canvas.copy())
        origins.append(origin)
        if progress:
            progress(len(canvases))
    if not canvases:
        raise CalibrationError("the source gave no usable frames")
    keep = spread(len(canvases), wanted)
    stacked = np.stack([canvases[i] for i in keep])  # (N, S, S, 3)
    return CalibrationSet(
        stacked, [origins[i] for i in keep], pad_value, frames_sha256(stacked)
    ), dedupe.dropped


def save(calib: CalibrationSet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        format=np.array(FORMAT),
        version=np.array(VERSION),
        canvases=calib.canvases,
        origins=np.array(calib.origins),
        pad_value=np.array(calib.pad_value),
        sha256=np.array(calib.sha256),
    )
    tmp.replace(path)


def load(path: Path) -> CalibrationSet:
    if not path.is_file():
        raise CalibrationError(f"{path}: no such calibration set (make one with edge-calibrate collect)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                raise CalibrationError(f"{path}: not a calibration set (format {data['format']!s})")
            version = int(data["version"])
            if version != VERSION:
                raise CalibrationError(
                    f"{path}: calibration set version {version}, this tool reads {VERSION}; collect it again"
                )
            calib = CalibrationSet(
                data["canvases"],
                [str(o) for o in data["origins"]],
                int(data["pad_value"]),
                str(data["sha256"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CalibrationError(f"{path}: unreadable calibration set ({err})") from None
    if frames_sha256(calib.canvases) != calib.sha256:
        raise CalibrationError(f"{path}: frames do not match the file's sha256 (damaged); collect it again")
    return calib
