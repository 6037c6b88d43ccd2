"""`edge-run`: explainable anomaly detection on a camera, a stream, a file or an image folder.

Exit codes: 0 clean stop (end of file, --max-frames, SIGINT/SIGTERM); 1 runtime failure;
2 refused bundle, config or usage; 3 source cannot be opened. SIGHUP re-reads the config at once
(it is also re-read when the file changes). Under systemd (`Type=notify`) it reports READY once
running and pings the watchdog from the detection loop.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from h2a.runtime.backend_args import add_backend_arguments, backend_options
from h2a.runtime.bundle import load_bundle
from h2a.runtime.cli import run_main
from h2a.runtime.engine import CAPTION_THREADS, SPIN_MODES
from h2a.runtime.errors import EXIT_OK, InputError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edge-run", description="Explainable anomaly detection on a camera."
    )
    parser.add_argument("--engine", type=Path, required=True, help="the plan bundle, e.g. h2a.plan")
    parser.add_argument("--inspect", action="store_true", help="check the bundle, print a summary, exit")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, help="USB/CSI camera index")
    src.add_argument(
        "--source", help="video file, image folder, /dev/videoN, RTSP/HTTP URL or GStreamer pipeline"
    )
    parser.add_argument(
        "--alerts", type=Path, default=Path("alerts"), help="alert store folder (default ./alerts)"
    )
    parser.add_argument(
        "--config", type=Path, help="TOML config: thresholds, zones, masks (reloaded on change)"
    )
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many processed frames")
    parser.add_argument("--dry-run", action="store_true", help="detect and caption, but write no alerts")
    parser.add_argument(
        "--record",
        action="store_true",
        help="store an evidence clip with each alert ([record] in the config)",
    )
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="TYPE=VALUE",
        help="override one anomaly type's enter threshold, e.g. --threshold shooting=0.4",
    )
    add_backend_arguments(parser)
    parser.add_argument("--providers", help="ONNX Runtime providers, comma-separated (default CPU)")
    parser.add_argument("--threads", type=int, default=0, help="threads of hoi (0 = one per core)")
    parser.add_argument(
        "--caption-threads",
        type=int,
        default=CAPTION_THREADS,
        help=f"threads of the caption graphs ({CAPTION_THREADS})",
    )
    parser.add_argument(
        "--spin",
        choices=SPIN_MODES,
        default="auto",
        help="hoi's threads busy-wait between ops while a frame runs: auto = for INT8 bundles "
        "(faster there), off when other programs need the cores (default auto)",
    )
    parser.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    code = run_main("edge-run", lambda: dispatch(args))
    from h2a.edge.sources import hung_readers

    if hung_readers():  # a camera read the watchdog abandoned is still hanging (see hung_readers)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def dispatch(args: argparse.Namespace) -> int:
    if args.inspect:
        from h2a.edge.inspect_bundle import summarize

        print(summarize(load_bundle(args.engine, require_backend=False)))
        return EXIT_OK
    if args.camera is None and args.source is None:
        raise InputError("give --camera N or --source PATH_OR_URL (or --inspect)")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from h2a.edge.config import ConfigError, ConfigWatcher
    from h2a.edge.pipeline import PipelineOptions, build_pipeline
    from h2a.edge.sources import parse_source
    from h2a.edge.telemetry import log_event, log_fields, setup_logging
    from h2a.runtime.engine import Engine

    setup_logging(args.log_level)
    bundle = load_bundle(args.engine)
    m = bundle.manifest
    overrides = {}
    for item in args.threshold:
        name, _, value = item.partition("=")
        try:
            overrides[name] = float(value)
        except ValueError:
            raise ConfigError(f"--threshold {item}: the value must be a number") from None
    watcher = ConfigWatcher(args.config, m.labels.anomalies, dict(m.thresholds.anomaly), overrides)
    spec = parse_source(args.camera, args.source)
    providers = args.providers.split(",") if args.providers else None
    engine = Engine(
        bundle,
        providers,
        args.threads,
        args.caption_threads,
        hoi_spin=args.spin,
        options=backend_options(args),
    )
    options = PipelineOptions(
        None if args.dry_run else args.alerts, args.max_frames, args.status_every, record=args.record
    )
    pipeline = build_pipeline(engine, spec, watcher, options, str(m.provenance.get("model_sha256", "")))

    def stop(signum: int, _frame: FrameType | None) -> None:
        log_event("stopping", signal=signal.Signals(signum).name)
        pipeline.stop_event.set()

    def reload(signum: int, _frame: FrameType | None) -> None:
        log_event("reload_requested", signal=signal.Signals(signum).name)
        pipeline.reload_requested.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, reload)
    # graphs that run elsewhere than the backend (ONNX Runtime's INT8 caption graphs beside OpenVINO)
    elsewhere = {f"{g}_backend": b for g, b in engine.graph_backends.items() if b != engine.backend}
    log_fields(
        "started",
        {
            "engine": str(args.engine),
            "source": spec.describe(),
            "backend": engine.backend,
            **elsewhere,
            "precision": engine.precision,
            "alerts": "off (dry run)" if args.dry_run else str(args.alerts),
            "config": watcher.config.version,
        },
    )
    stats = pipeline.run()
    log_event(
        "stopped",
        frames=stats.get("frames_processed"),
        events=stats.get("events_opened"),
        alerts=stats.get("alerts_written"),
        alert_errors=stats.get("alert_errors"),
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
