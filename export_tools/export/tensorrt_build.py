"""Build TensorRT engines from a bundle's ONNX graphs (Q/DQ INT8 or FP32), on the target device.

    edge-export --backend tensorrt --onnx-bundle int8-trt.plan --out h2a.plan [--workspace-mb 2048]

A serialized engine runs only on the TensorRT version and GPU family that built it, so this runs
on the Jetson (or a desktop GPU of the same family). Explicit quantization is the main path: the
Q/DQ graphs from `edge-calibrate quantize --target tensorrt` carry their scales and TensorRT fuses
them. For TensorRT < 10.1 an FP32 bundle plus `--calib calib.npz` calibrates `hoi` implicitly with
the legacy entropy calibrator and its reusable cache.

Every TensorRT call of the export side is in this module (the runtime's are in
`runtime/backends/tensorrt_backend.py`). It is type-checked against tensorrt-stubs in CI and has
not been executed in this project's workplace, which has no TensorRT (see README).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import tensorrt as trt

from h2a.export_tools.export.tensorrt_options import (
    BuildOptions,
    check_dla,
    dla_core_for,
    explicit_batch_flags,
)
from h2a.runtime.bundle import Bundle
from h2a.runtime.bundle_writer import write_bundle
from h2a.runtime.errors import BackendError
from h2a.runtime.manifest import GraphEntry


class _Logger(trt.ILogger):
    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: list[str] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        if severity <= trt.ILogger.Severity.ERROR:
            self.errors.append(msg)
        if severity <= trt.ILogger.Severity.WARNING:
            print(f"tensorrt: {msg}", file=sys.stderr)


# IProgressMonitor appeared in TensorRT 10.0 (9.x early access): on 8.x the build runs without one.
HAS_PROGRESS_MONITOR = hasattr(trt, "IProgressMonitor")
if HAS_PROGRESS_MONITOR:

    class _Progress(trt.IProgressMonitor):
        """Prints each top-level build phase with its duration: engine builds take minutes."""

        def __init__(self, graph: str) -> None:
            trt.IProgressMonitor.__init__(self)
            self.graph = graph
            self.started: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.started[phase_name] = time.monotonic()
            if parent_phase is None:
                print(f"  {self.graph}: {phase_name} ({num_steps} steps)", flush=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            started = self.started.pop(phase_name, None)
            if started is not None and not self.started:
                print(f"  {self.graph}: {phase_name} done in {time.monotonic() - started:.0f} s", flush=True)


def _has_qdq(network: trt.INetworkDefinition) -> bool:
    return any(
        network.get_layer(i).type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
        for i in range(network.num_layers)
    )


def build_engine(
    onnx_bytes: bytes, graph: str, options: BuildOptions, logger: _Logger
) -> tuple[bytes, str, dict[str, Any]]:
    """(serialized engine, precision, shape profile) of one graph."""
    builder = trt.Builder(logger)
    flags = explicit_batch_flags(trt.__version__, int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse the {graph} graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if HAS_PROGRESS_MONITOR:
        config.progress_monitor = _Progress(graph)
    explicit_int8 = _has_qdq(network)
    precision = "int8" if explicit_int8 else "fp32"
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        precision = precision if explicit_int8 else "fp16"
    if explicit_int8:
        config.set_flag(trt.BuilderFlag.INT8)
    elif graph == "hoi" and options.legacy_calibrator is not None:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = options.legacy_calibrator
        precision = "int8"
    check_dla(graph, options, precision == "int8")
    dla_core = dla_core_for(graph, options)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache = _timing_cache(config, options.timing_cache)
    profile = builder.create_optimization_profile()
    shapes: dict[str, Any] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = [int(tensor.shape[j]) for j in range(len(tensor.shape))]
        low = [1 if d < 0 else d for d in dims]
        high = [options.max_batch if d < 0 else d for d in dims]
        profile.set_shape(tensor.name, trt.Dims(low), trt.Dims(low), trt.Dims(high))
        shapes[tensor.name] = {"min": low, "opt": low, "max": high}
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build {graph}: {'; '.join(logger.errors[-3:]) or 'see log'}")
    if options.timing_cache is not None:
        options.timing_cache.write_bytes(bytes(cache.serialize()))
    return bytes(serialized), precision, shapes


def _timing_cache(config: trt.IBuilderConfig, path: Path | None) -> trt.ITimingCache:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_bundle(
    source: Bundle, out: Path, options: BuildOptions, compute_capability: tuple[int, int]
) -> None:
    """Engines for every graph of `source` (an ONNX bundle), written as a TensorRT bundle."""
    if source.manifest.backend != "onnxruntime":
        raise BackendError(f"{source.path}: --onnx-bundle must hold ONNX graphs (backend onnxruntime)")
    logger = _Logger()
    members: dict[str, bytes] = {source.manifest.tokenizer: source.member(source.manifest.tokenizer)}
    graphs: dict[str, GraphEntry] = {}
    profiles: dict[str, Any] = {}
    for name, entry in source.manifest.graphs.items():
        print(f"building {name} ...", flush=True)
        engine, precision, shapes = build_engine(source.graph_bytes(name), name, options, logger)
        member = f"graphs/{name}.engine"
        members[member] = engine
        graphs[name] = GraphEntry(
            member, precision, "tensorrt-engine", entry.quantization, entry.accuracy_delta
        )
        profiles[name] = shapes
    tensorrt = {
        "version": trt.__version__,
        "compute_capability": list(compute_capability),
        "profiles": profiles,
        "workspace_mb": options.workspace_mb,
        "dla_core": options.dla_core,
        "dla_graphs": [g for g in graphs if dla_core_for(g, options) is not None],
        "fp16": options.fp16,
        "legacy_calibration": options.legacy_calibrator is not None,
    }
    manifest = dataclasses.replace(
        source.manifest,
        backend="tensorrt",
        graphs=graphs,
        provenance={**source.manifest.provenance, "tensorrt": tensorrt, "onnx_bundle": str(source.path)},
        members={},
    )
    write_bundle(out, manifest, members)
