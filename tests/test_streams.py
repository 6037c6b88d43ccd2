"""Live streams from a real server: an HTTP MJPEG stream (multipart/x-mixed-replace, what many IP
cameras serve) on 127.0.0.1, read by a real `edge-run` through OpenCV's FFmpeg backend. The server
stalls mid-frame, freezes its picture, or goes away and comes back; edge-run must notice within
`freeze_timeout` + 1 s, reconnect, and keep detecting. Timings are measured on this machine's
monotonic clock from the server's side and from edge-run's log lines as they arrive."""

from __future__ import annotations

import http.server
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

FREEZE_S = 1.5
CONFIG = f"[camera]\nfreeze_timeout = {FREEZE_S}\nreconnect_min = 0.2\nreconnect_max = 1.0\n"
FRAME_GAP_S = 0.04


class MjpegServer:
    """Serves numbered noise frames; `behaviour(connection, frame)` says what to do with each:
    "send", "stall" (half a JPEG, then silence with the socket open), "same" (repeat the last
    picture) or "close"."""

    def __init__(self, behaviour: Any, port: int = 0) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.events: list[tuple[str, float]] = []
        self.stop = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.connections += 1
                connection = owner.connections
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                rng = np.random.default_rng(connection)
                jpeg = b""
                for i in range(1_000_000):
                    action = owner.behaviour(connection, i)
                    if action != "same" or not jpeg:
                        image = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
                        jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                    part = (
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n"
                    )  # fmt: skip
                    try:
                        if action == "close" or owner.stop.is_set():
                            return
                        if action == "stall":
                            owner.events.append(("stall", time.monotonic()))
                            self.wfile.write(part[: len(part) // 2])
                            self.wfile.flush()
                            owner.stop.wait()
                            return
                        if action == "same" and not any(e == "same" for e, _ in owner.events):
                            owner.events.append(("same", time.monotonic()))
                        self.wfile.write(part)
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(FRAME_GAP_S)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class EdgeRun:
    """edge-run on the stream, its stderr lines collected with their arrival times."""

    def __init__(self, bundle: Path, url: str, config: Path, max_frames: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "h2a.edge.run_cli", "--engine", str(bundle), "--source", url,
             "--config", str(config), "--dry-run", "--max-frames", str(max_frames), "--status-every", "0.5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip()))

    def first(self, text: str, after: float = 0.0) -> float | None:
        return next((t for t, line in self.lines if text in line and t >= after), None)

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        self.thread.join(timeout=5)
        return code

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(CONFIG)
    return path


def test_a_stream_that_stalls_mid_frame_trips_the_watchdog_and_comes_back(
    tiny_bundle: Path, config: Path
) -> None:
    server = MjpegServer(lambda connection, frame: "stall" if connection == 1 and frame == 25 else "send")
    try:
        run = EdgeRun(tiny_bundle, f"http://127.0.0.1:{server.port}/", config, max_frames=60)
        assert run.wait() == 0, run.log()
    finally:
        server.close()
    stalled = next(t for e, t in server.events if e == "stall")
    tripped = run.first("froze for", stalled)
    assert tripped is not None, run.log()
    assert tripped - stalled <= FREEZE_S + 1.0, f"watchdog after {tripped - stalled:.2f} s"
    assert "(a read is hanging)" in run.log()
    assert server.connections >= 2 and "frames_processed=60" in run.log()  # detection went on
    print(f"\nstall -> watchdog {tripped - stalled:.2f} s (freeze_timeout {FREEZE_S} s)")


def test_a_frozen_picture_trips_the_watchdog(tiny_bundle: Path, config: Path) -> None:
    server = MjpegServer(lambda connection, frame: "same" if connection == 1 and frame >= 15 else "send")
    try:
        run = EdgeRun(tiny_bundle, f"http://127.0.0.1:{server.port}/", config, max_frames=80)
        assert run.wait() == 0, run.log()
    finally:
        server.close()
    frozen = next(t for e, t in server.events if e == "same")
    tripped = run.first("froze for", frozen)
    assert tripped is not None, run.log()
    assert tripped - frozen <= FREEZE_S + 1.0, f"watchdog after {tripped - frozen:.2f} s"
    assert "freezes=1" in run.log() and server.connections >= 2
    print(f"\nfrozen picture -> watchdog {tripped - frozen:.2f} s (freeze_timeout {FREEZE_S} s)")


def test_a_server_that_goes_away_and_comes_back(tiny_bundle: Path, config: Path) -> None:
    first = MjpegServer(lambda connection, frame: "send")
    port = first.port
    run = EdgeRun(tiny_bundle, f"http://127.0.0.1:{port}/", config, max_frames=120)
    deadline = time.monotonic() + 60
    while run.first("event=status") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = time.monotonic()
    first.close()  # the connection drops and the port refuses
    time.sleep(3.0)
    restarted = time.monotonic()
    second = MjpegServer(lambda connection, frame: "send", port=port)
    try:
        assert run.wait() == 0, run.log()
    finally:
        second.close()
    noticed = run.first("reconnecting", killed) or run.first("unavailable", killed)
    back = run.first("opened", restarted)
    assert noticed is not None and back is not None, run.log()
    assert noticed - killed <= FREEZE_S + 1.0
    assert back - restarted <= 1.0 + 1.5  # reconnect_max back-off, plus opening the stream
    assert "frames_processed=120" in run.log() and second.connections >= 1
    print(f"\nserver gone -> noticed {noticed - killed:.2f} s; back -> reopened {back - restarted:.2f} s")
