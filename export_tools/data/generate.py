"""`edge-datagen`: write the procedural data set (images + IAD-Hoi annotations) or labelled videos."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from h2a.export_tools.data.annotations import SPLITS, write_iad
from h2a.export_tools.data.scenes import (
    ANOMALY_SCENES,
    GENERATOR_VERSION,
    NORMAL_SCENES,
    Scene,
    SceneGenerator,
    redraw_until_staged,
)
from h2a.export_tools.taxonomy import ACTIONS, ANOMALIES, OBJECTS
from h2a.runtime.cli import run_main
from h2a.runtime.errors import H2AError, InputError
from h2a.runtime.labels import labels_json

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
JPEG_QUALITY = 92
VIDEO_FPS = 10
VIDEO_SECONDS = 8
LABELS_FILE = "labels.json"


def split_of(index: int, count: int) -> str:
    """Contiguous blocks of the index range: the first 80% train, then 10% val, then 10% test."""
    edge_train = int(count * SPLIT_FRACTIONS[0])
    edge_val = edge_train + int(count * SPLIT_FRACTIONS[1])
    return SPLITS[0] if index < edge_train else SPLITS[1] if index < edge_val else SPLITS[2]


def scene_entry(scene: Scene, file: str, split: str) -> dict[str, Any]:
    inst = scene.instances
    return {
        "file": file,
        "width": scene.image.shape[1],
        "height": scene.image.shape[0],
        "split": split,
        "anomaly": scene.anomaly is not None,
        "anomaly_type": scene.anomaly,
        "kind": scene.kind,
        "hoi": [
            [list(inst[s].box), list(inst[o].box), inst[s].label, inst[o].label, a] for s, o, a in scene.hois
        ],
        "instances": [[list(i.box), i.label] for i in inst],
        "caption": {
            "what": scene.caption.what,
            "who": scene.caption.who,
            "where": scene.caption.where,
            "total": scene.caption.total,
        },
    }


def write_images(out: Path, count: int, size: int, seed: int, progress: bool = True) -> Path:
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    gen = SceneGenerator(size, seed)
    entries = []
    for index in tqdm(range(count), desc="scenes", unit="img", disable=not progress):
        scene = gen.staged(index)
        name = f"images/{index:06d}.jpg"
        cv2.imwrite(str(out / name), scene.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        entries.append(scene_entry(scene, name, split_of(index, count)))
    return write_iad(
        out,
        OBJECTS,
        ACTIONS,
        ANOMALIES,
        entries,
        {"generator": {"seed": seed, "size": size, "version": GENERATOR_VERSION}},
    )


def write_videos(
    out: Path, count: int, size: int, seed: int, progress: bool = True, normal_only: bool = False
) -> Path:
    """Short clips: a normal scene, then (in most clips) an anomalous one in the same place, then
    normal again; per-frame sensor noise and camera shake keep frames from being identical.
    `normal_only`: every clip stays normal (footage to calibrate a site's thresholds on)."""
    videos_dir = out / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    gen = SceneGenerator(size, seed)
    rng = np.random.default_rng((seed, 7))
    frames = VIDEO_FPS * VIDEO_SECONDS
    clips = []
    timed: dict[str, list[tuple[str, float, float]]] = {}  # labels in seconds of video position
    for index in tqdm(range(count), desc="videos", unit="clip", disable=not progress):
        base = 10_000 * (index + 1)
        normal = gen.scene(base, kind=str(rng.choice(list(NORMAL_SCENES))), background=base)
        has_event = not normal_only and index % 4 != 3  # every fourth clip stays normal throughout
        events: list[dict[str, Any]] = []
        anomalous = None
        start = end = -1
        if has_event:
            kind = str(rng.choice(list(ANOMALY_SCENES)))
            # a labelled event must show its anomaly: the label file's types are never null (the
            # lambda is called before the loop moves on, so binding `base` and `kind` late is safe)
            anomalous = redraw_until_staged(
                lambda attempt: gen.scene(base + 1 + attempt, kind=kind, background=base)  # noqa: B023
            )
            assert anomalous.anomaly is not None
            start = int(rng.integers(frames // 5, frames // 2))
            end = min(frames - 5, start + int(rng.integers(frames // 4, frames // 2)))
            events.append(
                {
                    "type": anomalous.anomaly,
                    "start_frame": start,
                    "end_frame": end,
                    "caption": anomalous.caption.total,
                }
            )
        name = f"videos/clip_{index:03d}.mp4"
        timed[name] = [
            (e["type"], e["start_frame"] / VIDEO_FPS, (e["end_frame"] + 1) / VIDEO_FPS) for e in events
        ]
        writer = cv2.VideoWriter(str(out / name), cv2.VideoWriter.fourcc(*"mp4v"), VIDEO_FPS, (size, size))
        if not writer.isOpened():
            raise H2AError("OpenCV cannot write mp4 video here (no FFmpeg backend in this OpenCV build)")
        for t in range(frames):
            scene = anomalous if anomalous is not None and start <= t <= end else normal
            shift = np.array([[1, 0, rng.normal(0, 0.6)], [0, 1, rng.normal(0, 0.6)]], np.float32)
            frame = cv2.warpAffine(scene.image, shift, (size, size), borderMode=cv2.BORDER_REFLECT)
            noise = rng.normal(0, 3, size=(size, size, 3)).astype(np.float32)
            writer.write(np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8))
        writer.release()
        clips.append(
            {
                "file": name,
                "fps": VIDEO_FPS,
                "frames": frames,
                "width": size,
                "height": size,
                "events": events,
            }
        )
    path = out / "videos.json"
    payload = {"format": "h2a-videos", "version": 1, "generator_version": GENERATOR_VERSION, "videos": clips}
    path.write_text(json.dumps(payload, indent=1))
    # the same events in seconds of video position, the form edge-tune reads (h2a.runtime.labels)
    (out / LABELS_FILE).write_text(labels_json(timed))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge-datagen",
        description=("Render the procedural HOI data set (IAD-Hoi form) or short labelled videos."),
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    parser.add_argument("--count", type=int, required=True, help="number of images (or videos with --video)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same data (default 0)")
    parser.add_argument("--video", action="store_true", help="write short videos with event labels instead")
    parser.add_argument("--normal-only", action="store_true", help="with --video: no anomaly in any clip")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    return run_main("edge-datagen", lambda: generate(args))


def generate(args: argparse.Namespace) -> None:
    if args.count < 1:
        raise InputError("--count must be at least 1")
    if args.size < 64 or args.size % 32:
        raise InputError("--size must be a multiple of 32, at least 64")
    if args.normal_only and not args.video:
        raise InputError("--normal-only goes with --video")
    if args.video:
        path = write_videos(args.out, args.count, args.size, args.seed, not args.quiet, args.normal_only)
    else:
        path = write_images(args.out, args.count, args.size, args.seed, not args.quiet)
    print(f"wrote {args.count} {'videos' if args.video else 'images'} and {path}")


if __name__ == "__main__":
    sys.exit(main())
