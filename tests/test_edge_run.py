"""edge-run end to end on real files and processes: a video written with OpenCV, a real bundle,
the SQLite store, signals, a full disk."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from h2a.edge.alerts import AlertStore

from .conftest import run_cli

#: One type fires from the first frame and stays open; the others never fire. The random-init
#: bundle's triplet scores are tiny, so the triplet threshold is lowered to report boxes.
FORCE_FIGHTING = """
[detection]
triplet_score = 0.0001

[defaults]
enter = 1.0
exit = 0.0
min_duration = 0.0

[anomaly.fighting]
enter = 0.0
"""


def write_video(path: Path, frames: int, size: tuple[int, int] = (160, 120), fps: int = 10) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    for i in range(frames):
        frame = np.roll(base, 3 * i, axis=1)
        cv2.rectangle(frame, (10 + i % 50, 20), (60 + i % 50, 100), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture()
def force_config(tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(FORCE_FIGHTING)
    return path


def test_video_to_alerts_with_boxes_captions_and_snapshots(
    tiny_bundle: Path, tmp_path: Path, force_config: Path
) -> None:
    video = write_video(tmp_path / "clip.avi", 30)
    alerts = tmp_path / "alerts"
    result = run_cli(
        "h2a.edge.run_cli",
        "--engine",
        str(tiny_bundle),
        "--source",
        str(video),
        "--alerts",
        str(alerts),
        "--config",
        str(force_config),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "event=alert_written" in result.stderr and "event=status" in result.stderr
    store = AlertStore(alerts)
    (alert,) = list(store.alerts())
    assert alert.anomaly == "fighting" and alert.end_time is not None and alert.end_time >= alert.start_time
    # an untrained model's pointers all pick one instance, so it may report no triplet; the boxes
    # of those it reports must lie in the frame (test_runtime_engine checks triplets from pixels)
    assert alert.caption
    for t in alert.triplets:
        x1, y1, x2, y2 = t["subject_box"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120
    snapshot = cv2.imread(str(alerts / alert.snapshot))
    assert snapshot is not None and snapshot.shape[1] == 160 and snapshot.shape[0] > 120  # caption band
    assert store.integrity() == "ok"


def test_dry_run_and_max_frames_write_nothing(tiny_bundle: Path, tmp_path: Path, force_config: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 40)
    result = run_cli(
        "h2a.edge.run_cli",
        "--engine",
        str(tiny_bundle),
        "--source",
        str(video),
        "--alerts",
        str(tmp_path / "alerts"),
        "--config",
        str(force_config),
        "--dry-run",
        "--max-frames",
        "5",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "frames_processed=5" in result.stderr and 'stored="no (dry run)"' in result.stderr
    assert not (tmp_path / "alerts").exists()


def test_truncated_video_and_corrupt_images_are_survived(tiny_bundle: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 30)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # cut mid-frame
    result = run_cli(
        "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video), "--dry-run", timeout=300
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "images"
    folder.mkdir()
    frame = np.full((90, 120, 3), 80, np.uint8)
    cv2.imwrite(str(folder / "a.jpg"), frame)
    (folder / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cv2.imwrite(str(folder / "c.png"), frame)
    result = run_cli(
        "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(folder), "--dry-run", timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "frames_processed=2" in result.stderr and "bad_frames=1" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--source", "/nonexistent/clip.mp4"], 3, "no such file"),
        (["--source", "videotestsrc ! appsink"], 3, "GStreamer"),
        (["--camera", "0", "--threshold", "robbery=0.3"], 2, "unknown anomaly type 'robbery'"),
        ([], 2, "give --camera N or --source"),
    ],
)
def test_usage_errors_are_one_line(tiny_bundle: Path, args: list[str], code: int, fragment: str) -> None:
    result = run_cli("h2a.edge.run_cli", "--engine", str(tiny_bundle), *args, timeout=120)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines


def test_bad_config_names_the_key(tiny_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[anomaly.shooting]\nentr = 0.4\n")
    video = write_video(tmp_path / "clip.avi", 3)
    result = run_cli(
        "h2a.edge.run_cli",
        "--engine",
        str(tiny_bundle),
        "--source",
        str(video),
        "--config",
        str(bad),
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "edge-run: error: config: unknown key 'anomaly.shooting.entr' (known: cooldown, ema, enter, exit, "
        "min_duration)"
    ]


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    ok = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, check=False
        ).returncode
        == 0
    )
    return ok


@pytest.mark.parametrize("options", ["size=48k", "ro"])
def test_full_disk_or_read_only_store_keeps_detection_running(
    tiny_bundle: Path, tmp_path: Path, force_config: Path, options: str
) -> None:
    mount = tmp_path / "mnt"
    if not _mount_tmpfs(mount, options):
        pytest.skip("mounting a tmpfs needs root and mount rights (CI and the dev machines have them)")
    try:
        video = write_video(tmp_path / "clip.avi", 30, size=(320, 240))
        alerts = mount / "alerts"
        if options != "ro":  # fill the disk up to a few KiB
            (mount / "ballast").write_bytes(b"\0" * 40_000)
        result = run_cli(
            "h2a.edge.run_cli",
            "--engine",
            str(tiny_bundle),
            "--source",
            str(video),
            "--alerts",
            str(alerts),
            "--config",
            str(force_config),
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "event=alert_not_written" in result.stderr
        assert "frames_processed=30" in result.stderr  # detection went on
        leftovers = [p for p in mount.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".jpg"]
        assert leftovers == []  # nothing half-written
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_sigterm_mid_run_drains_and_closes_the_store(
    tiny_bundle: Path, tmp_path: Path, force_config: Path
) -> None:
    video = write_video(tmp_path / "long.avi", 3000)
    alerts = tmp_path / "alerts"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "h2a.edge.run_cli",
            "--engine",
            str(tiny_bundle),
            "--source",
            str(video),
            "--alerts",
            str(alerts),
            "--config",
            str(force_config),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.time() + 120
    for line in proc.stderr:
        if "event=alert_written" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest
    assert "event=stopping signal=SIGTERM" in rest and "event=stopped" in rest
    db = sqlite3.connect(alerts / "alerts.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT end_time FROM alerts").fetchall()
    assert rows and all(end is not None for (end,) in rows)  # the open event was closed on the way out
    assert os.path.getsize(alerts / "alerts.db") > 0


def test_edge_bench_runs_and_writes_its_ratios(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_cli(
        "h2a.edge.bench",
        "--engine",
        str(tiny_bundle),
        "--frames",
        "20",
        "--repeats",
        "2",
        "--json",
        str(out),
        "--spin",
        "off",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(out.read_text())
    assert report["hoi_spin"] == "off"
    assert report["caption"]["kv_speedup"] > 1.0  # recomputing the prefix is never faster
    assert report["pipeline"]["frames"] == 20 and report["pipeline"]["captions"] >= 1
    assert report["edge_run_peak_rss_mb"] > 50  # measured on a real edge-run child process
    assert "KV cache vs recompute" in result.stdout


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
