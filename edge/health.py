"""`edge-alerts --alerts DIR health`: is edge-run alive *and* seeing frames? For container
health checks (Docker's HEALTHCHECK, Kubernetes' exec probe) and monitoring scripts.

It reads `status.json`, which edge-run rewrites at every status line, so it needs no port and no
extra thread in edge-run. Unhealthy, with exit code 1 and one line saying why: no status file,
edge-run stopped, its status is stale (hung or killed), or no frame arrived for `max_frame_age`
seconds (a camera that is gone, which edge-run itself keeps reconnecting to). The alert store's
forwarding backlog is reported, not judged: an uplink that is down is not a reason to restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h2a.edge.status_file import read_status

#: Seconds without a processed frame after which a running edge-run counts as blind.
DEFAULT_MAX_FRAME_AGE_S = 60.0


@dataclass(frozen=True)
class Health:
    healthy: bool
    line: str


def check_health(folder: Path, max_frame_age: float = DEFAULT_MAX_FRAME_AGE_S) -> Health:
    status = read_status(folder)
    if status is None:
        return Health(
            False, f"unhealthy: no status in {folder} (edge-run not started with --alerts {folder}?)"
        )
    state = status["state"]
    if state != "running":
        why = "stopped" if state == "stopped" else f"not responding (last status {status['age']:.0f} s ago)"
        return Health(False, f"unhealthy: edge-run {why}")
    last_frame = status.get("last_frame_at")
    frame_age = time.time() - float(last_frame) if last_frame else None
    summary = _summary(status, frame_age)
    if frame_age is None or frame_age > max_frame_age:
        seen = "no frame yet" if frame_age is None else f"no frame for {frame_age:.0f} s"
        return Health(False, f"unhealthy: {seen} (source {status.get('source', '?')}); {summary}")
    return Health(True, f"healthy: {summary}")


def _summary(status: dict[str, Any], frame_age: float | None) -> str:
    parts = [
        f"{float(status.get('fps', 0.0)):.1f} fps",
        f"last frame {'-' if frame_age is None else f'{frame_age:.1f} s'} ago",
        f"reconnects {status.get('reconnects', 0)}",
        f"freezes {status.get('freezes', 0)}",
        f"alerts {status.get('alerts_written', 0)}",
    ]
    if status.get("forwarding"):
        parts.append(f"forwarded {status.get('alerts_forwarded', 0)}")
    return ", ".join(parts)
