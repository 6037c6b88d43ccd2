"""The score cache of `edge-tune replay`: detection run once per frame, kept for every sweep after.

Per clip and processed frame: the video position (seconds), every anomaly type's probability and
the top triplets' scores and boxes (frame pixels). The cache names the bundle's model hash and
each clip's sha256, so a replay of the same clips with the same model reuses it instead of
running detection again.

On disk: one `.npz` (numpy's zip of arrays) with a JSON header member, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from h2a.runtime.engine import MAX_TRIPLETS
from h2a.runtime.errors import InputError
from h2a.runtime.labels import LabelledEvent

CACHE_FORMAT = "h2a-scores"
CACHE_VERSION = 1
#: Triplets kept per frame (best first): all a detection keeps, so zones judge them as edge-run does.
TOP_TRIPLETS = MAX_TRIPLETS
HASH_CHUNK = 1 << 20
ARRAYS = ("positions", "probs", "triplet_scores", "subject_boxes", "object_boxes")


@dataclass
class ClipScores:
    clip: str  # resolved path, or the URL
    sha256: str  # of the file (or of a folder's images, in name order); "" for a stream
    frame_size: tuple[int, int]  # width, height
    positions: np.ndarray  # (n,) float64 seconds into the clip
    probs: np.ndarray  # (n, K) float32 probability per anomaly type
    triplet_scores: np.ndarray  # (n, TOP_TRIPLETS) float32; 0 where a frame had fewer triplets
    subject_boxes: np.ndarray  # (n, TOP_TRIPLETS, 4) float32 x1, y1, x2, y2 frame pixels
    object_boxes: np.ndarray  # (n, TOP_TRIPLETS, 4)

    @property
    def duration(self) -> float:
        """Seconds the replayed frames cover (the last frame counts for one frame interval)."""
        n = len(self.positions)
        if n == 0:
            return 0.0
        step = float(np.median(np.diff(self.positions))) if n > 1 else 0.0
        return float(self.positions[-1] - self.positions[0]) + step


@dataclass(frozen=True)
class CacheHeader:
    format: str
    version: int
    model_sha256: str
    anomalies: list[str]
    default_enter: dict[str, float]  # the bundle's enter thresholds, the base a config overrides
    stride: int
    config_version: str  # masks change what detection sees: part of what the scores depend on
    # clip -> [[type, start s, end s], ...] from `replay --labels`; a clip absent is unlabelled
    labels: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)


@dataclass
class ScoreCache:
    header: CacheHeader
    clips: list[ClipScores]

    def labelled(self) -> dict[str, list[LabelledEvent]]:
        """The labels stored with the scores, for the clips that have them."""
        return {
            clip: [LabelledEvent(t, a, b) for t, a, b in events]
            for clip, events in self.header.labels.items()
        }

    def clip(self, name: str) -> ClipScores | None:
        return next((c for c in self.clips if c.clip == name), None)

    def reusable(self, model_sha256: str, stride: int, config_version: str) -> bool:
        h = self.header
        return (h.model_sha256, h.stride, h.config_version) == (model_sha256, stride, config_version)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        clips = []
        for i, c in enumerate(self.clips):
            clips.append({"clip": c.clip, "sha256": c.sha256, "frame_size": list(c.frame_size)})
            for key in ARRAYS:
                arrays[f"c{i}_{key}"] = getattr(c, key)
        header = json.dumps({**asdict(self.header), "clips": clips})
        arrays["header"] = np.frombuffer(header.encode("utf-8"), np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        try:
            np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as allow_pickle
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @staticmethod
    def load(path: Path) -> ScoreCache:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["header"]).decode("utf-8"))
                if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
                    raise InputError(f"{path}: not an edge-tune score cache of version {CACHE_VERSION}")
                clips = [
                    ClipScores(
                        c["clip"],
                        c["sha256"],
                        (int(c["frame_size"][0]), int(c["frame_size"][1])),
                        *(data[f"c{i}_{key}"] for key in ARRAYS),
                    )
                    for i, c in enumerate(meta["clips"])
                ]
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path}: cannot read the score cache ({err})") from None
        labels = {
            clip: [(t, float(a), float(b)) for t, a, b in events] for clip, events in meta["labels"].items()
        }
        header = CacheHeader(**{**{k: meta[k] for k in CacheHeader.__dataclass_fields__}, "labels": labels})
        return ScoreCache(header, clips)


def new_header(
    model_sha256: str, anomalies: list[str], default_enter: dict[str, float], stride: int, config_version: str
) -> CacheHeader:
    return CacheHeader(
        CACHE_FORMAT,
        CACHE_VERSION,
        model_sha256,
        list(anomalies),
        dict(default_enter),
        stride,
        config_version,
    )


def sha256_of(paths: list[Path]) -> str:
    """One digest over the files in order (a video: one file; an image folder: its images)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode("utf-8"))
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
