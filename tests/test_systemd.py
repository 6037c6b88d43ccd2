"""edge-run under systemd: the notify protocol (READY, WATCHDOG, STOPPING) received on a real
datagram socket as systemd would, SIGHUP reloading the config even when the file's time did not
change, and the shipped unit checked by `systemd-analyze verify` where systemd is installed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_edge_run_events import noise_video

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "edge" / "deploy" / "h2a-edge@.service"


def test_notify_protocol_and_sighup_reload(tiny_bundle: Path, tmp_path: Path) -> None:
    video = noise_video(tmp_path / "clip.avi", 60)
    config = tmp_path / "edge.toml"
    config.write_text("[camera]\nfps_cap = 15.0\n[defaults]\nenter = 0.9\n")
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}  # ping every 0.2 s
    proc = subprocess.Popen(
        [sys.executable, "-m", "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video),
         "--config", str(config), "--dry-run", "--status-every", "60"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(m.startswith("READY=1") for m in messages):
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert any(m.startswith("READY=1") for m in messages), messages
        # the file changes while its modification time stays: only SIGHUP can make edge-run see it
        stamp = config.stat()
        config.write_text("[camera]\nfps_cap = 15.0\n[defaults]\nenter = 0.8\n")
        os.utime(config, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        while proc.poll() is None:
            with contextlib.suppress(TimeoutError):
                messages.append(listener.recv(4096).decode())
        with contextlib.suppress(TimeoutError):
            while True:  # what was sent just before the exit
                messages.append(listener.recv(4096).decode())
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        listener.close()
    assert proc.returncode == 0, err
    assert messages.count("WATCHDOG=1") >= 5  # 60 frames at 15 fps: about 4 s of pings every 0.2 s
    assert messages[-1] == "STOPPING=1"
    assert "event=reload_requested signal=SIGHUP" in err
    assert "event=config_reloaded" in err


def test_without_systemd_nothing_is_sent() -> None:
    from h2a.edge.sd_notify import Notifier

    notifier = Notifier({})
    assert not notifier.active and notifier.ping_every is None
    assert not notifier.send("READY=1")
    assert (
        Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).ping_every is None
    )
    assert Notifier({"NOTIFY_SOCKET": "@abstract"}).address == "\0abstract"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd is not installed (apt-get install systemd)"
)
def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit as shipped, with ExecStart pointed at this checkout's edge-run (verify checks that
    the program exists)."""
    edge_run = Path(sys.executable).parent / "edge-run"
    if not edge_run.exists():
        pytest.skip("edge-run is not installed beside this Python (pip install -e .)")
    text = UNIT.read_text().replace("/opt/h2a/.venv/bin/edge-run", str(edge_run))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Type=notify" in text and "WatchdogSec=" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text


def test_a_reload_applies_the_camera_settings_to_the_running_capture(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    from h2a.edge.config import ConfigWatcher
    from h2a.edge.pipeline import PipelineOptions, build_pipeline
    from h2a.edge.sources import SourceSpec
    from h2a.runtime.bundle import load_bundle
    from h2a.runtime.engine import Engine

    bundle = load_bundle(tiny_bundle)
    m = bundle.manifest
    config = tmp_path / "edge.toml"
    config.write_text("[camera]\nfreeze_timeout = 5.0\n")
    watcher = ConfigWatcher(config, m.labels.anomalies, dict(m.thresholds.anomaly))
    spec = SourceSpec("url", "http://127.0.0.1:9/never", True)
    pipeline = build_pipeline(Engine(bundle), spec, watcher, PipelineOptions(None), "test")
    assert pipeline.source.freeze_timeout == 5.0
    config.write_text(
        "[camera]\nfreeze_timeout = 2.5\nreconnect_min = 0.5\nreconnect_max = 4.0\nframe_stride = 3\n"
    )
    pipeline._reload(force=True)
    assert (pipeline.source.freeze_timeout, pipeline.source.reconnect_min, pipeline.source.reconnect_max) == (
        2.5,
        0.5,
        4.0,
    )
    assert pipeline.config.camera.frame_stride == 3  # the detection loop reads it per frame
