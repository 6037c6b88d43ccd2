"""The command-line options that pick a backend, shared by every CLI that runs a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from h2a.runtime.engine import RUNTIME_BACKENDS, BackendOptions

PRECISION_CHOICES = ("auto", "f32", "bf16")  # openvino_backend.PRECISION_HINTS, without importing it
NO_CACHE = "off"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=RUNTIME_BACKENDS,
        default="auto",
        help="what runs the graphs: auto = the bundle's TensorRT engines, else OpenVINO where "
        "installed, else ONNX Runtime (default auto)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="OpenVINO's float precision: auto = bf16 where the CPU has it natively and the bundle "
        "passed the bf16 accuracy gate, else f32 (default auto)",
    )
    parser.add_argument(
        "--ov-cache",
        metavar="DIR",
        help=f"OpenVINO's compiled-graph cache (default $H2A_CACHE_DIR/openvino or ~/.cache/h2a/openvino; "
        f"'{NO_CACHE}' compiles every start)",
    )


def backend_options(args: argparse.Namespace) -> BackendOptions:
    if args.ov_cache is None:
        return BackendOptions(args.backend, args.precision)
    cache = None if args.ov_cache == NO_CACHE else Path(args.ov_cache)
    return BackendOptions(args.backend, args.precision, cache)
