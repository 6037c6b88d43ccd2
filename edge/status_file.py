"""`status.json` in the alert store: what edge-run's status line says, as a file the review page
reads. It is rewritten (atomically, by rename) at each status line, so a reader never sees half a
file; it is not fsynced, because a lost status after a power cut costs nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATUS_NAME = "status.json"
#: A running edge-run whose file is older than this many status periods is shown as not responding.
STALE_PERIODS = 3.0


def write_status(folder: Path, fields: dict[str, Any], running: bool, every: float) -> None:
    data = {**fields, "running": running, "updated": time.time(), "pid": os.getpid(), "status_every": every}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATUS_NAME}.tmp"
    try:
        tmp.write_text(json.dumps(data, default=str))
        tmp.replace(folder / STATUS_NAME)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def read_status(folder: Path) -> dict[str, Any] | None:
    """The last status, with `age` (seconds since it was written) and `state`: running, stale
    (the process stopped writing: hung or killed) or stopped. None when there is none."""
    try:
        data = json.loads((folder / STATUS_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    age = max(0.0, time.time() - float(data.get("updated", 0.0)))
    every = float(data.get("status_every", 10.0))
    if not data.get("running"):
        state = "stopped"
    elif age > STALE_PERIODS * every:
        state = "stale"
    else:
        state = "running"
    return {**data, "age": age, "state": state}
