"""`edge-run`: the on-device application.

This version inspects bundles (`--inspect`); running a camera or file source arrives with the
runtime pipeline (issue 4), and until then it says so and exits 2 rather than pretending.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from h2a.runtime.bundle import load_bundle
from h2a.runtime.errors import H2AError

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edge-run", description="Explainable anomaly detection on a camera."
    )
    parser.add_argument("--engine", type=Path, required=True, help="the plan bundle, e.g. h2a.plan")
    parser.add_argument("--inspect", action="store_true", help="check the bundle and print a summary")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, help="USB/CSI camera index")
    src.add_argument("--source", help="video file, image folder, RTSP/HTTP URL or GStreamer pipeline")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.inspect:
            from h2a.edge.inspect_bundle import summarize

            print(summarize(load_bundle(args.engine, require_backend=False)))
            return EXIT_OK
        load_bundle(args.engine)
        print(
            "edge-run: error: this version only inspects bundles (--inspect); running a camera or "
            "file source lands with the runtime pipeline",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except H2AError as err:
        print(f"edge-run: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
