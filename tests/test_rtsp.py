"""A real RTSP server (GStreamer's gst-rtsp-server, `tests/rtsp_server.py`) on 127.0.0.1 serving a
generated clip in real time, read by a real `edge-run` through OpenCV's FFmpeg backend. The
server is killed mid-stream and started again, or pauses (session open, nothing sent); edge-run
must notice, reconnect and keep detecting. Needs Debian's python3-gi and
gir1.2-gst-rtsp-server-1.0 (`.ci/run` installs them); skipped with that reason elsewhere."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from .test_streams import CONFIG, FREEZE_S, EdgeRun

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has gi; the virtual env has not
SERVER = Path(__file__).with_name("rtsp_server.py")
PROBE = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"


def _has_rtsp_server() -> bool:
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(
    not _has_rtsp_server(), reason="needs Debian python3-gi and gir1.2-gst-rtsp-server-1.0"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspServer:
    def __init__(self, clip: Path, port: int) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(clip), str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"RTSP server did not start: {line} {self.proc.stdout.read()}"

    def signal(self, sig: int) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def kill(self) -> float:
        self.proc.kill()
        self.proc.wait(timeout=10)
        return time.monotonic()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One minute at 10 fps, each frame numbered and noisy (the watchdog must not see a freeze)."""
    path = tmp_path_factory.mktemp("rtsp") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (256, 256))
    rng = np.random.default_rng(0)
    for i in range(600):
        image = np.full((256, 256, 3), 90, np.uint8)
        cv2.putText(image, str(i), (20, 140), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
        writer.write(np.clip(image.astype(int) + rng.integers(-8, 8, image.shape), 0, 255).astype(np.uint8))
    writer.release()
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(CONFIG)
    return path


def _wait_for(run: EdgeRun, text: str, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while (found := run.first(text)) is None and time.monotonic() < deadline and run.proc.poll() is None:
        time.sleep(0.05)
    assert found is not None, run.log()
    return found


def test_a_server_killed_mid_stream_and_restarted(tiny_bundle: Path, clip: Path, config: Path) -> None:
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/clip"
    server = RtspServer(clip, port)
    run = EdgeRun(tiny_bundle, url, config, max_frames=100)
    try:
        _wait_for(run, "event=status")
        killed = server.kill()
        time.sleep(3.0)
        restarted = time.monotonic()
        server = RtspServer(clip, port)
        assert run.wait() == 0, run.log()
    finally:
        server.kill()
    noticed = run.first("reconnecting", killed) or run.first("unavailable", killed)
    back = run.first("opened", restarted)
    assert noticed is not None and back is not None, run.log()
    assert noticed - killed <= FREEZE_S + 1.0, f"noticed after {noticed - killed:.2f} s"
    assert back - restarted <= 1.0 + 2.0  # reconnect_max back-off, plus the RTSP handshake
    assert "frames_processed=100" in run.log()  # detection went on after the gap
    gap, reopen = noticed - killed, back - restarted
    print(f"\nRTSP server killed -> noticed {gap:.2f} s; restarted -> reopened {reopen:.2f} s")


def test_a_paused_stream_trips_the_watchdog(tiny_bundle: Path, clip: Path, config: Path) -> None:
    port = free_port()
    server = RtspServer(clip, port)
    run = EdgeRun(tiny_bundle, f"rtsp://127.0.0.1:{port}/clip", config, max_frames=80)
    try:
        _wait_for(run, "event=status")
        paused = server.signal(signal.SIGUSR1)
        tripped = _wait_for(run, "froze for")
        server.signal(signal.SIGUSR2)  # the camera plays again: the fresh capture gets frames
        assert run.wait() == 0, run.log()
    finally:
        server.kill()
    assert tripped - paused <= FREEZE_S + 1.0, f"watchdog after {tripped - paused:.2f} s"
    assert "frames_processed=80" in run.log() and "freezes=1" in run.log()
    print(f"\nRTSP stream paused -> watchdog {tripped - paused:.2f} s (freeze_timeout {FREEZE_S} s)")
