"""`edge-export`: write a plan bundle from a checkpoint, a training folder or random weights,
or (`--backend tensorrt`) build TensorRT engines from an ONNX bundle on the device.

This module only parses arguments: the torch exporter (`torch_cli`, desktop, `[export]` extra) and
the engine builder (`tensorrt_cli`, device, `[jetson]` extra) are imported by the path that runs,
so building engines on a Jetson never needs torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from h2a.runtime.cli import require, run_main

MODEL_DIR_CHECKPOINT = "model.pt"
#: The model sizes of `h2a.export_tools.models.config.PRESETS`, named here without importing torch.
PRESETS = ("tiny", "base")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edge-export",
        description="Export the HOI encoder and caption model to a plan bundle (one file).",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a checkpoint written by edge-train")
    src.add_argument(
        "--model-dir", type=Path, help=f"a training output folder (uses DIR/{MODEL_DIR_CHECKPOINT})"
    )
    src.add_argument(
        "--random-init", action="store_true", help="untrained weights (plumbing and timing only)"
    )
    src.add_argument(
        "--onnx-bundle",
        type=Path,
        help="with --backend tensorrt: build engines from this ONNX bundle (FP32, or Q/DQ INT8 from "
        "edge-calibrate quantize --target tensorrt); runs on the device",
    )
    parser.add_argument("--preset", choices=PRESETS, default="tiny", help="model size with --random-init")
    parser.add_argument("--seed", type=int, default=0, help="weight seed with --random-init (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="bundle to write, e.g. h2a.plan")
    parser.add_argument(
        "--backend",
        choices=("onnxruntime", "tensorrt"),
        default="onnxruntime",
        help="graph format inside the bundle (default onnxruntime)",
    )
    trt = parser.add_argument_group("TensorRT engines (--backend tensorrt --onnx-bundle X)")
    trt.add_argument("--workspace-mb", type=int, default=2048, help="builder workspace (2048: an 8 GB Orin)")
    trt.add_argument("--no-fp16", action="store_true", help="no FP16 fallback for non-INT8 layers")
    trt.add_argument("--max-batch", type=int, default=1, help="largest batch of the shape profiles (1)")
    trt.add_argument("--dla-core", type=int, help="build for this DLA core, GPU fallback on")
    trt.add_argument(
        "--timing-cache", type=Path, help="timing cache file, read and updated (faster rebuilds)"
    )
    trt.add_argument(
        "--calib", type=Path, help="TensorRT < 10.1: calibrate hoi implicitly from this calib.npz (legacy)"
    )
    trt.add_argument("--calib-cache-dir", type=Path, default=Path("."), help="where the legacy cache lives")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs torch parity check")
    parser.add_argument(
        "--save-checkpoint",
        type=Path,
        help="also write the weights as a checkpoint (of --random-init: for edge-bench --checkpoint)",
    )
    parser.add_argument(
        "--no-cache-decoder",
        type=Path,
        metavar="ONNX",
        help="also write the no-cache decoder (whole prefix per call), edge-bench's fair baseline",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend == "tensorrt" or args.onnx_bundle is not None:
        from h2a.export_tools.export.tensorrt_cli import build_tensorrt

        return run_main("edge-export", lambda: build_tensorrt(args))
    return run_main("edge-export", lambda: _export(args))


def _export(args: argparse.Namespace) -> None:
    require("torch", "export", "edge-export from a checkpoint or --random-init")
    from h2a.export_tools.export.torch_cli import export_from_torch

    export_from_torch(args)


if __name__ == "__main__":
    sys.exit(main())
