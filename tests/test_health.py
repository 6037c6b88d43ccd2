"""`edge-alerts health`: what a container health check gets from edge-run's status file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from h2a.edge.alerts_cli import main
from h2a.edge.health import check_health
from h2a.edge.status_file import STATUS_NAME, write_status

FIELDS = {"fps": 9.8, "reconnects": 2, "freezes": 1, "alerts_written": 3, "source": "rtsp://cam/1"}


def test_running_and_seeing_frames_is_healthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_status(tmp_path, {**FIELDS, "last_frame_at": time.time() - 0.5}, running=True, every=10.0)
    assert main(["--alerts", str(tmp_path), "health"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("healthy: 9.8 fps, last frame 0.5 s ago") and "reconnects 2, freezes 1" in line


@pytest.mark.parametrize(
    "frame_age, running, age, why",
    [
        (0.0, False, 0.0, "edge-run stopped"),
        (0.0, True, 45.0, "not responding (last status 45 s ago)"),
        (120.0, True, 0.0, "no frame for 120 s (source rtsp://cam/1)"),
        (None, True, 0.0, "no frame yet"),
    ],
)
def test_each_way_to_be_unhealthy_is_named(
    tmp_path: Path, frame_age: float | None, running: bool, age: float, why: str
) -> None:
    last_frame = None if frame_age is None else time.time() - frame_age
    write_status(tmp_path, {**FIELDS, "last_frame_at": last_frame}, running=running, every=10.0)
    if age:  # a status file edge-run stopped rewriting (hung or killed)
        path = tmp_path / STATUS_NAME
        data = json.loads(path.read_text())
        data["updated"] -= age
        path.write_text(json.dumps(data))
    result = check_health(tmp_path)
    assert not result.healthy and why in result.line
    assert main(["--alerts", str(tmp_path), "health"]) == 1


def test_no_status_file_is_unhealthy(tmp_path: Path) -> None:
    result = check_health(tmp_path)
    assert not result.healthy and "no status" in result.line
    assert main(["--alerts", str(tmp_path), "health", "--max-frame-age", "5"]) == 1
