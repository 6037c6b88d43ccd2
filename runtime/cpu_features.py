"""What this CPU's INT8 kernels can add without saturating, read from /proc/cpuinfo.

ONNX Runtime's and OpenVINO's CPU INT8 kernels (u8 activations, s8 weights) add two u8 x s8
products into an int16 before widening on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI):
2 x 255 x 127 overflows it, so large activations against large weights come out wrong. Weights
quantized to 7 bits (`edge-calibrate quantize --reduce-range`, within +-64) cannot overflow it
(2 x 255 x 64 = 32,640). VNNI (AVX512-VNNI, AVX-VNNI, AMX) adds in int32 and needs no such care.
Measured on a 2-core AMD EPYC (Zen 3, AVX2, no VNNI) with the tiny bundle's random weights:
cap_encoder's dynamic INT8 output error 0.178 with 8-bit weights, 0.013 with 7-bit ones; dec_step
0.154 and 0.020; hoi (static Q/DQ) 0.90 and 0.51; `--target openvino`'s s8 `hoi` image tokens
0.237 and 0.017 from FP32 on OpenVINO. The calibration tools decide the weights' width with this;
the runtime warns when a bundle's 8-bit weights meet such a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from h2a.runtime.manifest import Manifest

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: Every x86-64 CPU lists it; ARM CPUs list "Features" with other names and other kernels.
X86_FLAG = "sse2"
CPUINFO = Path("/proc/cpuinfo")
#: Backends whose INT8 kernels run on this CPU (TensorRT's run on the GPU).
CPU_BACKENDS = ("onnxruntime", "openvino")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's feature flags; empty where /proc/cpuinfo cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def saturates_8bit_weights(flags: frozenset[str]) -> bool:
    """An x86 CPU without VNNI: 8-bit INT8 weights overflow its int16 pair sums."""
    return X86_FLAG in flags and not (VNNI_FLAGS & flags)


def int8_weight_warning(
    manifest: Manifest, graph_backends: Mapping[str, str], flags: frozenset[str] | None = None
) -> str | None:
    """One line for the log when this bundle's INT8 graphs carry 8-bit weights and run on this
    CPU's saturating kernels; None when nothing is at risk. A bundle quantized before the
    calibration recorded `reduce_range` has 8-bit weights."""
    flags = cpu_flags() if flags is None else flags
    if not saturates_8bit_weights(flags):
        return None
    calibration = manifest.provenance.get("calibration") or {}
    if calibration.get("reduce_range"):
        return None
    at_risk = [
        name
        for name, graph in manifest.graphs.items()
        if graph.precision == "int8" and graph_backends.get(name) in CPU_BACKENDS
    ]
    if not at_risk:
        return None
    remedy = (
        # TensorRT's symmetric s8 keeps 8-bit weights whatever --reduce-range says
        "for a CPU, quantize with edge-calibrate quantize --target cpu or openvino"
        if calibration.get("target") == "tensorrt"
        else "quantize the bundle again here (edge-calibrate quantize --reduce-range auto) or on any "
        "machine with --reduce-range on"
    )
    return (
        f"INT8 graphs {', '.join(at_risk)} carry 8-bit weights and this x86 CPU has no VNNI, whose "
        f"INT8 kernels saturate on them (scores may be wrong); {remedy}"
    )
