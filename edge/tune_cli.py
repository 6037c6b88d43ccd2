"""`edge-tune replay | sweep | calibrate | alarms`: thresholds from evidence, for field engineers.

    edge-tune replay --engine h2a.plan --source clips/ [--labels labels.json] --out run.scores
    edge-tune sweep --scores run.scores [--config edge.toml] [--target-fa 1] --out report/
    edge-tune calibrate --scores normal.scores --target-fa 0.5 --config edge.toml
    edge-tune alarms --scores normal.scores [--config edge.toml] [--json alarms.json]

`replay` runs detection once per frame (as `edge-run` would: masks, stride, the same model) and
caches the scores; a second replay of the same clips with the same bundle and config is instant.
`sweep` runs edge-run's own event logic over the cached scores for a grid of enter / exit /
minimum-duration settings per type and reports caught and missed events, false alarms per hour
and the operating point for a target false-alarm rate. `calibrate` chooses per-site thresholds
from footage known to be normal and writes them into the config, where a running `edge-run`
picks them up. `alarms` counts the false alarms the config's own thresholds raise on replayed
footage (all of it normal, except labelled events). Needs no torch; plots need matplotlib (`[tune]`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from h2a.edge.config import EdgeConfig, load_config
from h2a.edge.score_cache import ScoreCache
from h2a.edge.sweep import SECONDS_PER_HOUR
from h2a.runtime.cli import run_main
from h2a.runtime.errors import InputError
from h2a.runtime.labels import LabelledEvent, load_labels


def cmd_replay(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from h2a.edge.replay import Clip, expand_sources, replay
    from h2a.runtime.bundle import load_bundle
    from h2a.runtime.engine import Engine

    bundle = load_bundle(args.engine)
    m = bundle.manifest
    config = load_config(args.config, m.labels.anomalies, dict(m.thresholds.anomaly))
    stride = args.stride or config.camera.frame_stride
    clips = expand_sources(args.source)
    labels = load_labels(args.labels, m.labels.anomalies) if args.labels else {}
    previous = ScoreCache.load(args.out) if args.out.is_file() else None
    engine = Engine(bundle, threads=args.threads)
    bars: list[tqdm] = []

    def on_clip(clip: Clip, reused: bool) -> Callable[[], None]:
        for bar in bars:
            bar.close()
        bars.clear()
        name = Path(clip.name).name or clip.name
        if reused:
            if not args.quiet:
                print(f"{name}: reused from {args.out}")
            return lambda: None
        bar = tqdm(desc=name, unit="frame", disable=args.quiet)
        bars.append(bar)
        return lambda: bar.update(1)

    started = time.perf_counter()
    cache, reused = replay(
        engine,
        clips,
        config,
        stride,
        str(m.provenance.get("model_sha256", "")),
        previous,
        args.max_frames,
        on_clip,
    )
    for bar in bars:
        bar.close()
    clip_labels = {
        c.clip: [(e.type, e.start, e.end) for e in labels[Path(c.clip)]]
        for c in cache.clips
        if Path(c.clip) in labels
    }
    cache = dataclasses.replace(cache, header=dataclasses.replace(cache.header, labels=clip_labels))
    cache.save(args.out)
    frames = sum(len(c.positions) for c in cache.clips)
    hours = sum(c.duration for c in cache.clips) / SECONDS_PER_HOUR
    print(
        f"wrote {args.out}: {len(cache.clips)} clips ({reused} reused), {frames} frames, "
        f"{hours:.2f} h of video, {len(clip_labels)} labelled, in {time.perf_counter() - started:.1f} s"
    )


def _thresholds(cache: ScoreCache, config_path: Path | None) -> EdgeConfig:
    return load_config(config_path, cache.header.anomalies, cache.header.default_enter)


def _labels(
    cache: ScoreCache, path: Path | None, alerts: Path | None = None
) -> dict[str, list[LabelledEvent]]:
    """The cache's own labels, overridden clip by clip by a labels file, plus the alerts a field
    engineer marked true or false in an alert store."""
    from h2a.edge.sweep import alert_evidence, labels_by_clip

    labels = cache.labelled()
    if path is not None:
        labels.update(labels_by_clip(cache, load_labels(path, cache.header.anomalies)))
    if alerts is not None:
        for clip, events in alert_evidence(alerts, cache).items():
            labels[clip] = [*labels.get(clip, []), *events]
    return labels


def cmd_sweep(args: argparse.Namespace) -> None:
    from h2a.edge.sweep import judge, labelled_hours, predict, recommend, settings_grid
    from h2a.edge.tune_report import TypeResult, write_report

    cache = ScoreCache.load(args.scores)
    config = _thresholds(cache, args.config)
    labels = _labels(cache, args.labels, args.alerts)
    if not labels:
        raise InputError(
            f"{args.scores}: no labelled clips; replay with --labels, give --labels here, or --alerts with "
            "alerts marked by edge-alerts label"
        )
    hours = labelled_hours(cache, labels)
    grid = {name: settings_grid(config.thresholds[name]) for name in cache.header.anomalies}
    started = time.perf_counter()
    events = predict(cache, grid, config)
    swept = time.perf_counter() - started
    results = []
    for name, settings in grid.items():
        outcomes = [
            judge(name, th, ev, labels, hours, args.tolerance)
            for th, ev in zip(settings, events[name], strict=True)
        ]
        chosen, met = recommend(outcomes, args.target_fa)
        results.append(TypeResult(name, chosen, met, outcomes))
    files = write_report(args.out, results, cache, labels, args.target_fa, hours, not args.no_plots)
    rows = sum(len(s) for s in grid.values())
    frames = sum(len(c.positions) for c in cache.clips)
    print((args.out / "report.md").read_text().split("\n## ")[0].rstrip())
    video_hours = sum(c.duration for c in cache.clips) / SECONDS_PER_HOUR
    print(
        f"\nswept {rows} settings over {frames} frames ({video_hours:.2f} h) "
        f"in {swept:.2f} s; wrote {len(files)} files to {args.out}"
    )


def cmd_calibrate(args: argparse.Namespace) -> None:
    from h2a.edge.site_calibrate import calibrate, write_thresholds

    normal = ScoreCache.load(args.scores)
    config = _thresholds(normal, args.config if args.config.exists() else None)  # created if absent
    labelled = None
    if args.labelled:
        cache = ScoreCache.load(args.labelled)
        labels = _labels(cache, args.labels)
        if not labels:
            raise InputError(f"{args.labelled}: no labelled clips; replay it with --labels")
        labelled = (cache, labels)
    results = calibrate(
        normal,
        config.thresholds,
        args.target_fa,
        args.holdout,
        args.margin,
        labelled,
        args.allow_lower,
        config,
    )
    print(f"{'type':<14} {'enter':>11} {'exit':>11} {'FA/h held-out':>18} {'recall':>13}  target")
    for r in results:
        recall = "-" if r.recall_after is None else f"{r.recall_before:.2f}->{r.recall_after:.2f}"
        print(
            f"{r.anomaly:<14} {r.before.enter:>5.2f}->{r.after.enter:<4.2f} "
            f"{r.before.exit:>5.2f}->{r.after.exit:<4.2f} "
            f"{r.held_out_fa_per_hour_before:>8.2f}->{r.held_out_fa_per_hour:<8.2f} {recall:>13}  "
            f"{'met' if r.target_met else 'NOT met'}"
        )
    held_hours = sum(c.duration for c in normal.clips) * args.holdout / SECONDS_PER_HOUR
    print(
        f"calibrated on the first {1 - args.holdout:.0%} of each clip, "
        f"checked on the last {args.holdout:.0%} "
        f"({held_hours:.2f} h); margin {args.margin} above the lowest enter within {args.target_fa} FA/h"
    )
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    if args.dry_run:
        print("dry run: config not changed")
        return
    note = f"{args.target_fa} FA/h target, {Path(args.scores).name}"
    write_thresholds(args.config, results, normal.header.anomalies, note)
    print(f"wrote thresholds into {args.config} (a running edge-run reloads it)")


def cmd_alarms(args: argparse.Namespace) -> None:
    from h2a.edge.sweep import judge, labelled_hours, predict

    cache = ScoreCache.load(args.scores)
    config = _thresholds(cache, args.config)
    labels: dict[str, list[LabelledEvent]] = {c.clip: [] for c in cache.clips}  # normal unless labelled
    labels.update(_labels(cache, args.labels))
    hours = labelled_hours(cache, labels)
    names = cache.header.anomalies
    events = predict(cache, {name: [config.thresholds[name]] for name in names}, config)
    outcomes = [judge(name, config.thresholds[name], events[name][0], labels, hours) for name in names]
    total = sum(o.false_alarms for o in outcomes)
    frames = sum(len(c.positions) for c in cache.clips)
    print(f"{len(cache.clips)} clips, {frames} frames, {hours:.3f} h; the config's own thresholds:")
    print(f"  {'type':14s} {'enter':>5s} {'exit':>5s} {'min s':>5s} {'false':>5s} {'per hour':>8s}")
    for o in outcomes:
        th = o.setting
        print(
            f"  {o.anomaly:14s} {th.enter:5.2f} {th.exit:5.2f} {th.min_duration:5.1f} "
            f"{o.false_alarms:5d} {o.fa_per_hour:8.2f}"
        )
    per_hour = total / hours if hours > 0 else 0.0
    print(f"  {'all types':14s} {'':17s} {total:5d} {per_hour:8.2f}")
    if args.json is not None:
        report = {
            "clips": len(cache.clips),
            "frames": frames,
            "hours": hours,
            "false_alarms": total,
            "false_alarms_per_hour": per_hour,
            "per_type": {
                o.anomaly: {"false_alarms": o.false_alarms, "per_hour": o.fa_per_hour} for o in outcomes
            },
        }
        args.json.write_text(json.dumps(report, indent=1))


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "alarms": cmd_alarms,
    "replay": cmd_replay,
    "sweep": cmd_sweep,
    "calibrate": cmd_calibrate,
}


def parser() -> argparse.ArgumentParser:
    from h2a.edge.site_calibrate import DEFAULT_HOLDOUT, DEFAULT_MARGIN
    from h2a.edge.sweep import DEFAULT_TOLERANCE_S

    p = argparse.ArgumentParser(prog="edge-tune", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="detection once per frame of recorded clips -> a score cache")
    r.add_argument("--engine", type=Path, required=True, help="the plan bundle edge-run uses")
    r.add_argument(
        "--source",
        action="append",
        required=True,
        help="a clip, a folder of clips or images, or a URL (repeatable)",
    )
    r.add_argument(
        "--labels", type=Path, help="clip labels (JSON, see h2a.runtime.labels), kept in the cache"
    )
    r.add_argument("--config", type=Path, help="edge-run's config: its masks apply, as on the device")
    r.add_argument("--stride", type=int, default=0, help="detect every n-th frame (default: the config's)")
    r.add_argument("--max-frames", type=int, default=0, help="stop each clip after this many (streams)")
    r.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads of hoi (0 = one per core)")
    r.add_argument("--out", type=Path, required=True, help="the score cache (reused when it matches)")
    s = sub.add_parser("sweep", help="edge-run's event logic over cached scores for a grid of thresholds")
    s.add_argument("--scores", type=Path, required=True)
    s.add_argument("--config", type=Path, help="base thresholds (cooldown and EMA are kept from it)")
    s.add_argument("--labels", type=Path, help="clip labels, beside or instead of those in the cache")
    s.add_argument(
        "--alerts", type=Path, help="an alert store whose marked alerts (edge-alerts label) count too"
    )
    s.add_argument("--target-fa", type=float, default=1.0, help="false alarms per hour to stay within (1)")
    s.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE_S, help="seconds of slack when matching"
    )
    s.add_argument("--no-plots", action="store_true", help="no PNG plots (no matplotlib needed)")
    s.add_argument("--out", type=Path, required=True, help="report folder")
    c = sub.add_parser("calibrate", help="per-site thresholds from normal footage, into the config")
    c.add_argument("--scores", type=Path, required=True, help="replayed footage known to be normal")
    c.add_argument("--target-fa", type=float, required=True, help="false alarms per hour to stay within")
    c.add_argument("--config", type=Path, required=True, help="the config to write (created if absent)")
    c.add_argument("--labelled", type=Path, help="replayed labelled clips: report the recall it costs")
    c.add_argument("--labels", type=Path, help="labels for --labelled, beside those in its cache")
    c.add_argument(
        "--holdout", type=float, default=DEFAULT_HOLDOUT, help="last fraction of each clip kept out"
    )
    c.add_argument(
        "--margin", type=float, default=DEFAULT_MARGIN, help="added to the lowest enter within target"
    )
    c.add_argument("--allow-lower", action="store_true", help="let thresholds drop below the configured ones")
    c.add_argument("--json", type=Path, help="write the results here")
    c.add_argument("--dry-run", action="store_true", help="report only; leave the config as it is")
    a = sub.add_parser("alarms", help="false alarms per hour of the config's thresholds on replayed footage")
    a.add_argument("--scores", type=Path, required=True, help="replayed footage (normal unless labelled)")
    a.add_argument("--config", type=Path, help="the thresholds to judge (default: the bundle's)")
    a.add_argument("--labels", type=Path, help="labelled events that are not false alarms")
    a.add_argument("--json", type=Path, help="write the counts here")
    for sp in (r, s, c, a):
        sp.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "target_fa", 1.0) < 0:
        print("edge-tune: error: --target-fa must not be negative", file=sys.stderr)
        return 2
    return run_main("edge-tune", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
