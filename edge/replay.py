"""`edge-tune replay`: detection once per frame of recorded clips, into a score cache.

Frames go through what `edge-run` does before the event logic (the config's masks, the frame
stride, the same `Engine.detect`), so the cached scores are the scores `edge-run` would see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from h2a.edge.config import EdgeConfig
from h2a.edge.score_cache import TOP_TRIPLETS, ClipScores, ScoreCache, new_header, sha256_of
from h2a.edge.sources import IMAGE_SUFFIXES, FrameSource, SourceError, SourceSpec
from h2a.edge.zones import Masker
from h2a.runtime.engine import Engine

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".ts"}
URL_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://")


@dataclass(frozen=True)
class Clip:
    name: str  # resolved path, or the URL
    spec: SourceSpec
    files: tuple[Path, ...]  # what its sha256 covers; () for a stream


def expand_sources(sources: list[str]) -> list[Clip]:
    """Each video file is a clip; a folder of videos gives one clip per video; a folder of
    images is one clip (one image per second); a URL is a stream."""
    clips: list[Clip] = []
    for source in sources:
        if source.startswith(URL_PREFIXES):
            spec = SourceSpec("url", source, True)
            clips.append(Clip(spec.name(), spec, ()))
            continue
        path = Path(source)
        if path.is_file():
            spec = SourceSpec("file", str(path), False)
            clips.append(Clip(spec.name(), spec, (path,)))
        elif path.is_dir():
            entries = sorted(path.iterdir())
            videos = [p for p in entries if p.suffix.lower() in VIDEO_SUFFIXES]
            images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
            if videos:
                specs = [SourceSpec("file", str(v), False) for v in videos]
                clips += [Clip(spec.name(), spec, (v,)) for spec, v in zip(specs, videos, strict=True)]
            elif images:
                spec = SourceSpec("folder", str(path), False)
                clips.append(Clip(spec.name(), spec, tuple(images)))
            else:
                raise SourceError(f"{source}: no videos or images in this folder")
        else:
            raise SourceError(f"{source}: no such file, folder or URL")
    return clips


def replay_clip(
    engine: Engine,
    clip: Clip,
    sha256: str,
    config: EdgeConfig,
    stride: int,
    max_frames: int = 0,
    on_frame: Callable[[], None] = lambda: None,
) -> ClipScores:
    masker = Masker(engine.preprocess.pad_value)
    score = config.detection.triplet_score
    positions: list[float] = []
    probs: list[list[float]] = []
    top_scores = []
    subjects = []
    objects = []
    size = (0, 0)
    for frame in FrameSource(clip.spec):
        if frame.index % stride:
            continue
        size = (frame.image.shape[1], frame.image.shape[0])
        detection = engine.detect(masker(frame.image, config.masks), score if score >= 0 else None)
        positions.append(frame.position)
        probs.append([detection.anomaly[a] for a in engine.anomalies])
        scores_row = np.zeros(TOP_TRIPLETS, np.float32)  # (TOP,)
        boxes_row = np.zeros((2, TOP_TRIPLETS, 4), np.float32)  # (subject|object, TOP, 4)
        for i, (t, (s, o)) in enumerate(zip(detection.triplets, detection.frame_boxes(), strict=True)):
            if i == TOP_TRIPLETS:
                break
            scores_row[i], boxes_row[0, i], boxes_row[1, i] = t.score, s, o
        top_scores.append(scores_row)
        subjects.append(boxes_row[0])
        objects.append(boxes_row[1])
        on_frame()
        if max_frames and len(positions) >= max_frames:
            break
    k = len(engine.anomalies)
    return ClipScores(
        clip.name,
        sha256,
        size,
        np.array(positions, np.float64),
        np.array(probs, np.float32).reshape(-1, k),
        np.array(top_scores, np.float32).reshape(-1, TOP_TRIPLETS),
        np.array(subjects, np.float32).reshape(-1, TOP_TRIPLETS, 4),
        np.array(objects, np.float32).reshape(-1, TOP_TRIPLETS, 4),
    )


def replay(
    engine: Engine,
    clips: list[Clip],
    config: EdgeConfig,
    stride: int,
    model_sha256: str,
    previous: ScoreCache | None = None,
    max_frames: int = 0,
    on_clip: Callable[[Clip, bool], Callable[[], None]] = lambda clip, reused: lambda: None,
) -> tuple[ScoreCache, int]:
    """-> (cache, clips reused from `previous`). A clip is reused when the model, stride, config
    and the clip's sha256 all match; a stream never is. `on_clip(clip, reused)` returns the
    per-frame callback (a progress bar's update)."""
    default_enter = dict(engine.manifest.thresholds.anomaly)
    header = new_header(model_sha256, engine.anomalies, default_enter, stride, config.version)
    usable = (
        previous if previous is not None and previous.reusable(model_sha256, stride, config.version) else None
    )
    out: list[ClipScores] = []
    reused = 0
    for clip in clips:
        sha256 = sha256_of(list(clip.files)) if clip.files else ""
        old = usable.clip(clip.name) if usable is not None else None
        if old is not None and sha256 and old.sha256 == sha256:
            on_clip(clip, True)
            out.append(old)
            reused += 1
            continue
        out.append(replay_clip(engine, clip, sha256, config, stride, max_frames, on_clip(clip, False)))
    return ScoreCache(header, out), reused
