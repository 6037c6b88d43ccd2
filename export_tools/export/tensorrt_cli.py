"""The device side of `edge-export --backend tensorrt`: ONNX bundle -> TensorRT engines.

Runs on the Jetson with the `[jetson]` extra: it imports TensorRT (through `tensorrt_build`),
the CUDA layer and the calibration set, never torch or onnx.
"""

from __future__ import annotations

import argparse

from h2a.runtime.errors import BackendError, InputError


def build_tensorrt(args: argparse.Namespace) -> None:
    """Engines from an ONNX bundle, on this device's GPU."""
    if args.onnx_bundle is None:
        raise InputError("--backend tensorrt builds from an ONNX bundle: give --onnx-bundle PLAN")
    from h2a.runtime.bundle import load_bundle

    source = load_bundle(args.onnx_bundle, require_backend=False)
    target = (source.manifest.provenance.get("calibration") or {}).get("target")
    if target in ("cpu", "openvino"):
        raise InputError(
            f"{args.onnx_bundle} was quantized for the CPU (--target {target}: graphs in ONNX Runtime's "
            "own INT8 ops); for TensorRT run edge-calibrate quantize --target tensorrt on the FP32 bundle"
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
        from h2a.calibration.legacy_calibrator import (
            CacheKey,
            CalibrationCache,
            CalibrationFeeder,
            entropy_calibrator,
        )

        m = source.manifest
        calib = calib_set.load(args.calib)
        feeder = CalibrationFeeder(calib, m.preprocess.mean, m.preprocess.std, batch_size=1)
        key = CacheKey(
            "hoi",
            m.members[m.graphs["hoi"].member].sha256,
            calib.sha256,
            tensorrt_build.trt.__version__,
            cuda.compute_capability(),
        )
        cache = CalibrationCache(args.calib_cache_dir, key)
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
