"""edge-run's events end to end: one alert row per event however many come and go (also across a
`kill -9`), and evidence clips that start before their event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from h2a.edge.alert_store import AlertStore

from .conftest import run_cli


def noise_video(path: Path, frames: int, size: tuple[int, int] = (96, 72)) -> Path:
    """Every frame different, so an untrained model's anomaly scores wander from frame to frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, size)
    rng = np.random.default_rng(7)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def flapping_config(bundle: Path, video: Path, path: Path, frames: int) -> Path:
    """enter == exit == the median fighting score of the clip's first frames, no smoothing, no
    minimum duration, no cooldown: the event opens and closes dozens of times."""
    from h2a.runtime.bundle import load_bundle
    from h2a.runtime.engine import Engine

    engine = Engine(load_bundle(bundle))
    cap = cv2.VideoCapture(str(video))
    scores: list[float] = []
    while len(scores) < frames:
        ok, frame = cap.read()
        if not ok:
            break
        scores.append(engine.detect(frame).anomaly["fighting"])
    median = float(np.median(scores))
    assert min(scores) < median < max(scores)
    path.write_text(
        "[defaults]\nenter = 1.0\nexit = 0.0\nmin_duration = 0.0\ncooldown = 0.0\nema = 1.0\n"
        f"[anomaly.fighting]\nenter = {median!r}\nexit = {median!r}\n"
    )
    return path


def _logged(lines: list[str], event: str) -> list[dict[str, str]]:
    """The key=value fields of every log line of one event (values without spaces suffice here)."""
    out = []
    for line in lines:
        if f"event={event} " in line:
            out.append(dict(p.split("=", 1) for p in line.split() if "=" in p))
    return out


def test_many_short_events_each_get_their_own_alert_row(tiny_bundle: Path, tmp_path: Path) -> None:
    video = noise_video(tmp_path / "noise.avi", 300)
    config = flapping_config(tiny_bundle, video, tmp_path / "flap.toml", 300)
    alerts = tmp_path / "alerts"
    args = ["--engine", str(tiny_bundle), "--source", str(video), "--alerts", str(alerts)]
    result = run_cli("h2a.edge.run_cli", *args, "--config", str(config), timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    opened = [f["event_id"] for f in _logged(lines, "event_opened")]
    written = _logged(lines, "alert_written")
    assert len(opened) >= 30 and len(set(opened)) == len(opened)
    rows = {a.uid: a for a in AlertStore(alerts).alerts()}
    assert len(rows) == len(opened) and set(rows) == set(opened)  # one row per event, none overwritten
    assert {(int(f["id"]), f["event_id"]) for f in written} == {(a.id, a.uid) for a in rows.values()}
    assert all(a.end_time is not None and a.snapshot for a in rows.values())


def test_kill_9_mid_run_keeps_one_row_per_event_written(tiny_bundle: Path, tmp_path: Path) -> None:
    """After `kill -9`, every alert reported written is stored under its own event, and no row
    belongs to an event that never opened."""
    video = noise_video(tmp_path / "noise.avi", 3000)
    config = flapping_config(tiny_bundle, video, tmp_path / "flap.toml", 300)
    alerts = tmp_path / "alerts"
    cmd = [sys.executable, "-m", "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video)]
    proc = subprocess.Popen(
        [*cmd, "--alerts", str(alerts), "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.time() + 300
    while len(_logged(lines, "alert_written")) < 40 and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
    os.kill(proc.pid, signal.SIGKILL)
    lines += proc.stderr.read().splitlines()
    proc.wait()
    opened = {f["event_id"] for f in _logged(lines, "event_opened")}
    written = {(int(f["id"]), f["event_id"]) for f in _logged(lines, "alert_written")}
    assert len(written) >= 40
    store = AlertStore(alerts)  # reopening sweeps what the kill left half-written
    assert store.integrity() == "ok"
    rows = {(a.id, a.uid) for a in store.alerts()}
    assert written <= rows  # nothing reported written was lost or written over
    assert {uid for _, uid in rows} <= opened and len({uid for _, uid in rows}) == len(rows)


def _ramp_video(path: Path, frames: int, rising: bool) -> Path:
    """Frame i is flat grey 30 + 2i (or falling): its index can be read back from a clip."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (96, 72))
    for i in range(frames):
        writer.write(np.full((72, 96, 3), 30 + 2 * (i if rising else frames - 1 - i), np.uint8))
    writer.release()
    return path


def test_an_evidence_clip_holds_frames_from_before_the_event(tiny_bundle: Path, tmp_path: Path) -> None:
    from h2a.runtime.bundle import load_bundle
    from h2a.runtime.engine import Engine

    engine = Engine(load_bundle(tiny_bundle))
    for rising in (True, False):  # the untrained model's score must rise somewhere after frame 20
        video = _ramp_video(tmp_path / f"ramp{rising}.avi", 80, rising)
        cap = cv2.VideoCapture(str(video))
        scores = [engine.detect(f).anomaly["fighting"] for ok, f in iter(cap.read, (False, None)) if ok]
        later = int(np.argmax(scores[20:])) + 20
        if scores[later] > max(scores[:20]):
            break
    else:
        pytest.skip("this model's score never rises after the first 20 frames")
    enter = scores[later]
    opened = next(i for i, s in enumerate(scores) if s >= enter)
    config = tmp_path / "edge.toml"
    config.write_text(
        "[defaults]\nenter = 1.0\nexit = 0.0\nmin_duration = 0.0\ncooldown = 0.0\nema = 1.0\n"
        f"[anomaly.fighting]\nenter = {enter!r}\nexit = {enter!r}\n"
        "[record]\npre = 1.5\npost = 1.0\nfps = 10.0\nscale = 1.0\njpeg_quality = 95\n"
    )
    alerts = tmp_path / "alerts"
    args = [
        "--engine",
        str(tiny_bundle),
        "--source",
        str(video),
        "--alerts",
        str(alerts),
        "--config",
        str(config),
    ]
    result = run_cli("h2a.edge.run_cli", *args, "--record", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "event=clip_written" in result.stderr
    first = next(
        a for a in AlertStore(alerts).alerts() if a.start_position == pytest.approx(opened / 10, abs=1e-3)
    )
    assert first.clip and (alerts / first.clip).stat().st_size == first.clip_bytes > 0
    clip = cv2.VideoCapture(str(alerts / first.clip))
    greys = [float(f.mean()) for ok, f in iter(clip.read, (False, None)) if ok]
    indices = [round((g - 30) / 2) if rising else 79 - round((g - 30) / 2) for g in greys]
    assert indices[0] < opened and indices[0] >= opened - 16  # from 1.5 s before the opening
    assert indices[-1] >= indices[0] + 15  # and on past it
