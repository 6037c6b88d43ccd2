"""How long `edge-tune sweep` takes: one hour of cached scores at 10 fps, 6 types, 100 settings
each, stepped through the same TrackerBank as edge-run. A ratio-free figure on purpose: it says
whether a sweep takes seconds or minutes on this machine.

    python -m h2a.edge.sweep_bench [--hours 1] [--fps 10] [--settings 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from h2a.edge.events import TypeThresholds
from h2a.edge.score_cache import ClipScores, ScoreCache, new_header
from h2a.edge.sweep import SECONDS_PER_HOUR, predict, settings_grid

TYPES = ["fighting", "shooting", "abuse", "car accident", "riot", "explosion"]
TOP = 10


def synthetic_cache(hours: float, fps: float, seed: int = 0) -> ScoreCache:
    """Slowly wandering scores (a random walk folded into [0, 1]), so events open and close."""
    n = int(hours * SECONDS_PER_HOUR * fps)
    rng = np.random.default_rng(seed)
    walk = np.abs((0.3 + np.cumsum(rng.normal(0, 0.02, (n, len(TYPES))), axis=0)) % 2.0 - 1.0)
    clip = ClipScores(
        "synthetic", "", (640, 480), np.arange(n) / fps, walk.astype(np.float32),
        np.zeros((n, TOP), np.float32), np.zeros((n, TOP, 4), np.float32), np.zeros((n, TOP, 4), np.float32),
    )  # fmt: skip
    return ScoreCache(new_header("synthetic", TYPES, {t: 0.5 for t in TYPES}, 1, "defaults"), [clip])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m h2a.edge.sweep_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--settings", type=int, default=100, help="settings per type")
    args = p.parse_args(argv)
    cache = synthetic_cache(args.hours, args.fps)
    grid = {t: settings_grid(TypeThresholds())[: args.settings] for t in TYPES}
    started = time.perf_counter()
    events = predict(cache, grid)
    seconds = time.perf_counter() - started
    frames = len(cache.clips[0].positions)
    found = sum(len(e) for per_type in events.values() for e in per_type)
    print(
        f"swept {args.settings} settings x {len(TYPES)} types over {frames} frames ({args.hours:g} h at "
        f"{args.fps:g} fps) in {seconds:.2f} s ({found} events predicted)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
