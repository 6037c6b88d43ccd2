"""What the review page costs on this box: response times of `edge-alerts serve` over a store of
many alerts, measured in one run through real HTTP.

    python -m h2a.edge.review_bench [--alerts 2000] [--repeats 20]

The store is synthetic (640x360 snapshots, a 10-second evidence clip on the newest alert), written
through the real AlertStore into a temporary folder; the page runs as its own process, as on site.
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import cv2
import numpy as np

from h2a.edge.alert_store import AlertStore
from h2a.edge.alerts import Alert
from h2a.edge.evidence import SaveClip, encode_mp4
from h2a.runtime.cli import run_main

TYPES = ("fighting", "riot", "car accident", "shooting")
FRAME = (360, 640)
CLIP_SECONDS = 10.0
CLIP_FPS = 10.0


def _alert(i: int, t: float) -> Alert:
    return Alert(
        camera=f"cam{i % 3}", anomaly=TYPES[i % len(TYPES)], start_time=t, peak_score=0.5 + (i % 50) / 100,
        peak_time=t + 1, what="a man is kicking another person", who="a man and another person",
        location="in the middle of the image", caption=f"bench alert {i}",
        triplets=[{"subject": "person", "action": "kick", "object": "person", "score": 0.8,
                   "subject_box": [10.0, 20.0, 110.0, 300.0], "object_box": [90.0, 30.0, 200.0, 310.0]}],
        zones=[], model_sha256="0" * 64, config_version="bench", end_time=t + 5,
    )  # fmt: skip


def _frames(count: int) -> list[np.ndarray]:
    """Smooth moving content (noise would be the encoders' worst case, not a camera's)."""
    yy, xx = np.mgrid[0 : FRAME[0], 0 : FRAME[1]]
    out = []
    for k in range(count):
        base = ((xx + 4 * k) % 256).astype(np.uint8)
        frame = np.dstack([base, (yy % 256).astype(np.uint8), np.full(FRAME, 90, np.uint8)])
        cv2.circle(frame, (100 + 8 * k % 400, 180), 40, (30, 30, 220), -1)
        out.append(frame)
    return out


def build_store(folder: Path, count: int) -> int:
    store = AlertStore(folder)
    frames = _frames(int(CLIP_SECONDS * CLIP_FPS))
    ok, jpeg = cv2.imencode(".jpg", frames[0], [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    now = time.time() - count * 60
    newest = None
    for i in range(count):
        a = _alert(i, now + 60 * i)
        store.write(a, jpeg.tobytes())
        newest = a
    assert newest is not None and newest.id is not None
    clip = SaveClip(
        newest.uid, [(k / CLIP_FPS, cv2.imencode(".jpg", f)[1].tobytes()) for k, f in enumerate(frames)]
    )
    store.attach_clip(newest.uid, encode_mp4(clip))
    store.close()
    return newest.id


def _get(port: int, path: str) -> float:
    """Milliseconds for one GET, connection included (a browser's first request looks like this)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - t0) * 1000
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}")
    return elapsed


def bench(count: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        newest = build_store(folder, count)
        print(f"store: {count} alerts written in {time.perf_counter() - t0:.1f} s")
        cmd = [sys.executable, "-m", "h2a.edge.alerts_cli", "--alerts", str(folder), "serve", "--port", "0"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            port = int(line.split("http://127.0.0.1:", 1)[1].split("/")[0])
            print(f"{'request':<40} {'median ms':>10}")
            cold = {
                "thumbnail, first request": f"/alerts/{newest}/thumb.jpg",
                "clip as WebM, first request (transcode)": f"/alerts/{newest}/clip.webm",
            }
            for name, path in cold.items():
                print(f"{name:<40} {_get(port, path):>10.1f}")
            warm = {
                "list, newest 50": "/",
                "list, filtered (type + camera + label)": "/?type=riot&camera=cam1&label=none",
                "list, page 20": "/?page=20",
                "one alert": f"/alerts/{newest}",
                "thumbnail, cached": f"/alerts/{newest}/thumb.jpg",
                "snapshot": f"/alerts/{newest}/snapshot.jpg",
                "clip as WebM, cached": f"/alerts/{newest}/clip.webm",
                "status panel (api/status)": "/api/status",
            }
            for name, path in warm.items():
                times = [_get(port, path) for _ in range(repeats)]
                print(f"{name:<40} {median(times):>10.1f}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m h2a.edge.review_bench", description=__doc__.split("\n")[0])
    p.add_argument("--alerts", type=int, default=2000, help="alerts in the synthetic store (2000)")
    p.add_argument("--repeats", type=int, default=20, help="requests per row (20)")
    args = p.parse_args(argv)
    return run_main("review_bench", lambda: bench(args.alerts, args.repeats))


if __name__ == "__main__":
    sys.exit(main())
