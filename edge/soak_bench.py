"""`python -m h2a.edge.soak_bench --engine B.plan [--frames 100000]`: does edge-run leak?

A box runs for months; a few kilobytes lost per alert, a thread or a file descriptor left per
reconnect, and it dies in week three. This runs a real `edge-run` over a long generated clip
whose picture switches between two scenes every `--period` frames, with one anomaly type's
thresholds put between the two scenes' scores (no cooldown, no minimum duration), so an event
opens, is captioned, stored as an alert with its snapshot and closes at every switch. It samples
the process's resident memory, threads and open file descriptors from /proc and counts the
status lines, then judges the run after warm-up: memory may grow by at most `--max-growth`
(default 5%), threads and descriptors not at all, and status lines must keep coming.

Linux only (/proc). Slow by design: 100,000 frames take minutes; the test suite runs it on a few
thousand frames (`tests/test_soak.py`), the full run is a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from h2a.runtime.bundle import load_bundle
from h2a.runtime.cli import run_main
from h2a.runtime.engine import Engine
from h2a.runtime.errors import H2AError, InputError

SIDE = 96  # small frames: the soak is about the pipeline's bookkeeping, not about pixels
SAMPLE_EVERY_S = 1.0
WARM_UP = 0.1  # the first tenth of the run fills caches, pools and queues: not a leak


@dataclass(frozen=True)
class Sample:
    t: float
    rss_kb: int
    threads: int
    fds: int


@dataclass(frozen=True)
class SoakResult:
    frames: int
    seconds: float
    alerts: int
    status_lines: int
    longest_status_gap_s: float
    rss_warm_kb: int
    rss_end_kb: int
    rss_growth: float
    threads_warm: int
    threads_end: int
    fds_warm: int
    fds_end: int
    passed: bool


def scenes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.integers(0, 256, (SIDE, SIDE, 3), np.uint8), (0, 0), 3)
    b = np.full((SIDE, SIDE, 3), 200, np.uint8)
    cv2.circle(b, (SIDE // 2, SIDE // 2), SIDE // 3, (20, 40, 160), -1)
    return a, b


def write_clip(path: Path, frames: int, period: int) -> None:
    """Scene a, then b, switching every `period` frames, each frame with fresh noise (the
    capture watchdog counts an unchanged picture as a frozen camera)."""
    a, b = scenes()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (SIDE, SIDE))
    rng = np.random.default_rng(1)
    for i in range(frames):
        base = a if (i // period) % 2 == 0 else b
        noise = rng.integers(-3, 4, base.shape)
        writer.write(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    writer.release()


def flapping_config(engine: Engine, path: Path) -> str:
    """Thresholds for the type whose score differs most between the two scenes: enter and exit
    between them, so every switch opens or closes an event. Returns that type."""
    a, b = scenes()
    sa, sb = engine.detect(a).anomaly, engine.detect(b).anomaly
    kind = max(sa, key=lambda k: abs(sa[k] - sb[k]))
    lo, hi = sorted((sa[kind], sb[kind]))
    if hi - lo < 1e-4:
        raise H2AError("the two scenes score alike for every type: no threshold separates them")
    enter, exit_ = lo + 0.6 * (hi - lo), lo + 0.4 * (hi - lo)
    others = "\n".join(f'[anomaly."{k}"]\nenter = 1.0\n' for k in sa if k != kind)
    path.write_text(
        f"[defaults]\nmin_duration = 0.0\ncooldown = 0.0\nema = 1.0\n\n"
        f'[anomaly."{kind}"]\nenter = {enter:.6f}\nexit = {exit_:.6f}\n\n{others}\n'
        "[alerts]\nretention_days = 1\nmax_disk_mb = 200\n"
    )
    return kind


def proc_sample(pid: int) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie: it exited after `poll` and before this read, and holds no memory
        return None
    return Sample(time.monotonic(), int(fields["VmRSS"].split()[0]), int(fields["Threads"]), fds)


def soak(
    engine_path: Path,
    frames: int,
    period: int,
    max_growth: float,
    work: Path,
    progress: bool,
    sample_every: float = SAMPLE_EVERY_S,
) -> SoakResult:
    """`sample_every`: seconds between /proc samples; short runs (tests) sample faster, because a
    quiet machine runs 2,000 tiny-bundle frames in under 10 s."""
    clip, config, alerts = work / "soak.mp4", work / "soak.toml", work / "alerts"
    engine = Engine(load_bundle(engine_path))
    kind = flapping_config(engine, config)
    del engine
    if progress:
        print(
            f"writing a {frames}-frame clip ({SIDE}x{SIDE}); {kind} flaps every {period} frames", flush=True
        )
    write_clip(clip, frames, period)
    proc = subprocess.Popen(
        [sys.executable, "-m", "h2a.edge.run_cli", "--engine", str(engine_path), "--source", str(clip),
         "--config", str(config), "--alerts", str(alerts), "--status-every", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    status_times: list[float] = []

    def read() -> None:  # drains edge-run's log, noting when each status line arrives
        assert proc.stderr is not None
        for line in proc.stderr:
            if "event=status" in line:
                status_times.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    samples: list[Sample] = []
    started = time.monotonic()
    while proc.poll() is None:
        sample = proc_sample(proc.pid)
        if sample is not None:
            samples.append(sample)
        if progress and len(samples) % 30 == 0 and samples:
            s = samples[-1]
            print(
                f"  {s.t - started:6.0f} s  rss {s.rss_kb / 1024:.1f} MB  threads {s.threads}  fds {s.fds}",
                flush=True,
            )
        time.sleep(sample_every)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise H2AError(f"edge-run exited with {proc.returncode}")
    reader.join(timeout=10)
    final = json.loads((alerts / "status.json").read_text())
    if len(samples) < 10:
        raise H2AError(f"only {len(samples)} samples: use more --frames for a soak")
    # warm once the pipeline has run a while: after its second status line and a tenth of the run
    warm_t = max(sorted(status_times)[1] if len(status_times) > 1 else started, started + WARM_UP * seconds)
    window = max(3, len(samples) // 20)  # 5% of the samples, so one sample's noise decides nothing
    first = next((i for i, s in enumerate(samples) if s.t >= warm_t), len(samples) - 2 * window)
    # the end: before edge-run's last status line, so its shutdown (threads joined) is not counted
    running = [s for s in samples if s.t <= max(status_times, default=samples[-1].t)] or samples
    head, tail = samples[first : first + window], running[-window:]
    # memory: peak against peak; threads and descriptors: the fewest at the end against the most
    # at warm-up, so a file open for a moment (a snapshot being written) is not a leak
    warm = Sample(
        head[0].t, max(s.rss_kb for s in head), max(s.threads for s in head), max(s.fds for s in head)
    )
    end = Sample(
        tail[-1].t, max(s.rss_kb for s in tail), min(s.threads for s in tail), min(s.fds for s in tail)
    )
    gaps = np.diff(sorted(status_times)) if len(status_times) > 1 else np.array([seconds])
    growth = (end.rss_kb - warm.rss_kb) / warm.rss_kb
    passed = growth <= max_growth and end.threads <= warm.threads and end.fds <= warm.fds
    passed = passed and len(status_times) >= 2 and float(gaps.max()) < 10.0
    return SoakResult(
        frames=int(final.get("frames_processed", 0)),
        seconds=seconds,
        alerts=int(final.get("alerts_written", 0)),
        status_lines=len(status_times),
        longest_status_gap_s=float(gaps.max()),
        rss_warm_kb=warm.rss_kb,
        rss_end_kb=end.rss_kb,
        rss_growth=growth,
        threads_warm=warm.threads,
        threads_end=end.threads,
        fds_warm=warm.fds,
        fds_end=end.fds,
        passed=passed,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="h2a-soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", type=Path, required=True, help="a plan bundle (the tiny one is enough)")
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--period", type=int, default=50, help="frames between scene switches (an alert each)")
    p.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth after warm-up")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    def go() -> int:
        if not Path("/proc/self/status").exists():
            raise InputError("the soak reads /proc: Linux only")
        with tempfile.TemporaryDirectory() as tmp:
            result = soak(args.engine, args.frames, args.period, args.max_growth, Path(tmp), not args.quiet)
        for key, value in asdict(result).items():
            print(f"{key:22s} {value:.4f}" if isinstance(value, float) else f"{key:22s} {value}")
        if args.json is not None:
            args.json.write_text(json.dumps(asdict(result), indent=1))
        return 0 if result.passed else 1

    return run_main("h2a-soak", go)


if __name__ == "__main__":
    sys.exit(main())
