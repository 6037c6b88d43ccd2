"""How fast the outbox drains: alerts forwarded per second to a real broker, and what a busy
forwarder costs the detection thread (`Engine.detect` timed with the forwarder idle and with it
draining, in this one run).

    python -m h2a.edge.forward_bench --port 1883 [--host 127.0.0.1] [--alerts 500] [--engine h2a.plan]

The alerts are synthetic (a 20 kB snapshot each), written into a temporary store first.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

import numpy as np

from h2a.edge.alert_store import AlertStore
from h2a.edge.alerts import Alert
from h2a.edge.config import MqttConfig
from h2a.edge.mqtt_forward import MqttForwarder
from h2a.edge.telemetry import Stats
from h2a.runtime.cli import run_main

SNAPSHOT_BYTES = 20_000


def _alert(i: int) -> Alert:
    return Alert(
        camera="bench", anomaly="riot", start_time=time.time(), peak_score=0.9, peak_time=time.time(),
        what="people are fighting", who="a man and a man", location="in the middle of the image",
        caption=f"bench alert {i}", triplets=[], zones=[], model_sha256="bench", config_version="bench",
    )  # fmt: skip


def _detect_ms(engine_path: Path | None, frames: int) -> list[float]:
    if engine_path is None:
        return []
    from h2a.runtime.bundle import load_bundle
    from h2a.runtime.engine import Engine

    engine = Engine(load_bundle(engine_path))
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    engine.detect(frame)
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        engine.detect(frame)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def bench(host: str, port: int, count: int, engine: Path | None, frames: int) -> None:
    idle = median(_detect_ms(engine, frames)) if engine else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = AlertStore(folder)
        for i in range(count):
            store.write(_alert(i), b"\xff\xd8" + bytes(SNAPSHOT_BYTES))
        store.close()
        stats = Stats()
        forwarder = MqttForwarder(folder, MqttConfig(host=host, port=port), "bench", stats)
        thread = threading.Thread(target=forwarder.run, daemon=True)
        started = time.perf_counter()
        thread.start()
        busy = median(_detect_ms(engine, frames)) if engine else None
        while stats.get("alerts_forwarded") < count and time.perf_counter() - started < 600:
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        forwarder.stop.set()
        thread.join(timeout=30)
    done = stats.get("alerts_forwarded")
    print(
        f"forwarded {done}/{count} alerts (snapshot + JSON each, QoS 1) in {seconds:.2f} s: "
        f"{done / seconds:.0f} alerts/s"
    )
    if idle is not None and busy is not None:
        print(
            f"detect p50 with the forwarder idle {idle:.1f} ms, while it drains {busy:.1f} ms "
            f"({busy / idle:.2f}x)"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m h2a.edge.forward_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--alerts", type=int, default=500)
    p.add_argument("--engine", type=Path, help="a bundle: time detect with and without the forwarder")
    p.add_argument("--frames", type=int, default=30, help="detect calls per measurement")
    args = p.parse_args(argv)
    return run_main(
        "forward_bench", lambda: bench(args.host, args.port, args.alerts, args.engine, args.frames)
    )


if __name__ == "__main__":
    raise SystemExit(main())
