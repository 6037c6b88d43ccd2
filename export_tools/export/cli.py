"""`edge-export`: write a plan bundle from a checkpoint, a training folder or random weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from h2a.export_tools.checkpoint import Checkpoint, load_checkpoint
from h2a.export_tools.export.exporter import ExportResult, ParityError, export_bundle
from h2a.export_tools.models import CaptionModel, HOIEncoder, make_config
from h2a.export_tools.models.config import PRESETS
from h2a.export_tools.taxonomy import ACTIONS, ANOMALIES, OBJECTS
from h2a.export_tools.tokenizer_build import default_tokenizer
from h2a.runtime.errors import BackendError, H2AError, InputError
from h2a.runtime.manifest import Labels

MODEL_DIR_CHECKPOINT = "model.pt"


def random_checkpoint(preset: str, seed: int) -> Checkpoint:
    """Untrained models of a preset with the built-in tokenizer: for plumbing, tests and timing."""
    tokenizer = default_tokenizer()
    config = make_config(preset, tokenizer.get_vocab_size())
    torch.manual_seed(seed)
    hoi, caption = HOIEncoder(config.hoi).eval(), CaptionModel(config.caption).eval()
    return Checkpoint(config, hoi, caption, tokenizer.to_str(), {"weights": f"random-init (seed {seed})"})


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
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def describe(result: ExportResult, out: Path, params: dict[str, int]) -> str:
    lines = [f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"]
    for name, size in result.graph_sizes.items():
        lines.append(f"  {name:<12} {size / 1e6:8.2f} MB ONNX")
    lines.append("  parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in params.items()))
    if result.parity is not None:
        p = result.parity
        worst = {g: max(e.values()) for g, e in p.graph_errors.items()}
        lines.append("  parity (max relative error): " + ", ".join(f"{g} {e:.1e}" for g, e in worst.items()))
        lines.append(
            f"  greedy decoding over {p.decode_steps} steps: ORT == torch: {p.decode_match}, "
            f"KV cache == recompute: {p.cache_match}"
        )
    return "\n".join(lines)


def build_tensorrt(args: argparse.Namespace) -> None:
    """Engines from an ONNX bundle, on this device's GPU."""
    if args.onnx_bundle is None:
        raise InputError("--backend tensorrt builds from an ONNX bundle: give --onnx-bundle PLAN")
    from h2a.runtime.bundle import load_bundle

    source = load_bundle(args.onnx_bundle, require_backend=False)
    if (source.manifest.provenance.get("calibration") or {}).get("target") == "cpu":
        raise InputError(
            f"{args.onnx_bundle} was quantized for ONNX Runtime on the CPU (u8 activations, contrib ops); "
            "for TensorRT run edge-calibrate quantize --target tensorrt on the FP32 bundle"
        )
    try:
        from h2a.export_tools.export import tensorrt_build
    except ImportError:
        raise BackendError(
            "TensorRT is not installed here; build engines on the device (JetPack: apt install "
            "python3-libnvinfer, venv with --system-site-packages)"
        ) from None
    from h2a.runtime.backends.cuda_memory import open_cuda

    cuda = open_cuda()
    calibrator = None
    if args.calib is not None:
        from h2a.calibration import calib_set
        from h2a.calibration.legacy_calibrator import CalibrationCache, CalibrationFeeder, entropy_calibrator

        p = source.manifest.preprocess
        feeder = CalibrationFeeder(calib_set.load(args.calib), p.mean, p.std, batch_size=1)
        cache = CalibrationCache(
            args.calib_cache_dir, "hoi", tensorrt_build.trt.__version__, cuda.compute_capability()
        )
        calibrator = entropy_calibrator(feeder, cache, cuda)
    options = tensorrt_build.BuildOptions(
        workspace_mb=args.workspace_mb,
        fp16=not args.no_fp16,
        max_batch=args.max_batch,
        dla_core=args.dla_core,
        timing_cache=args.timing_cache,
        legacy_calibrator=calibrator,
    )
    tensorrt_build.build_bundle(source, args.out, options, cuda.compute_capability())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, TensorRT engines)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend == "tensorrt" or args.onnx_bundle is not None:
        try:
            build_tensorrt(args)
        except H2AError as err:
            print(f"edge-export: error: {err}", file=sys.stderr)
            return err.exit_code
        return 0
    try:
        if args.random_init:
            ckpt, source = random_checkpoint(args.preset, args.seed), f"random-init preset {args.preset}"
        else:
            path = args.checkpoint or args.model_dir / MODEL_DIR_CHECKPOINT
            if not path.is_file():
                raise InputError(f"{path}: no such checkpoint")
            ckpt, _ = load_checkpoint(path)
            source = path.name
        labels = Labels(
            **ckpt.meta.get(
                "labels",
                {
                    "objects": list(OBJECTS),
                    "actions": list(ACTIONS),
                    "anomalies": list(ANOMALIES),
                },
            )
        )
        result = export_bundle(
            ckpt, args.out, labels, check=not args.no_check, progress=not args.quiet, source=source
        )
    except H2AError as err:
        print(f"edge-export: error: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, ParityError, OSError) as err:
        print(f"edge-export: error: {err}", file=sys.stderr)
        return 1
    params = {
        "hoi": sum(p.numel() for p in ckpt.hoi.parameters()),
        "caption": sum(p.numel() for p in ckpt.caption.parameters()),
    }
    print(describe(result, args.out, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
