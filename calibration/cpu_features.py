"""Whether this CPU multiplies u8 x s8 without the int16 saturation of AVX2's VPMADDUBSW.

ONNX Runtime's CPU INT8 kernels (u8 activations, s8 weights) add two u8 x s8 products into an
int16 before widening on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI): 2 x 255 x 127
overflows it, so large activations against large weights come out wrong. Weights quantized to 7
bits (`reduce_range`, within +-64) cannot overflow it (2 x 255 x 64 = 32,640). VNNI (AVX512-VNNI,
AVX-VNNI, AMX) adds in int32 and needs no such care. Measured on a 2-core AMD EPYC (Zen 3, AVX2,
no VNNI) with the tiny bundle's random weights: cap_encoder's dynamic INT8 output error 0.178
with 8-bit weights, 0.013 with 7-bit ones; dec_step 0.154 and 0.020; hoi (static Q/DQ) 0.90 and
0.51. OpenVINO's CPU plugin shows the same: the image tokens of `--target openvino`'s s8 `hoi`
were 0.237 (relative L2) from FP32 with 8-bit weights and 0.017 with 7-bit ones (ONNX Runtime:
0.223 and 0.018). TensorRT's GPU kernels need none of this.
"""

from __future__ import annotations

from pathlib import Path

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CPUINFO = Path("/proc/cpuinfo")
CHOICES = ("auto", "on", "off")


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


def reduce_range(choice: str, flags: frozenset[str] | None = None) -> bool:
    """`--reduce-range`: `auto` quantizes weights to 7 bits unless this CPU has VNNI (unknown
    CPUs included: 7 bits cost a little precision, saturation costs far more)."""
    if choice not in CHOICES:
        raise ValueError(f"--reduce-range {choice!r}: expected one of {', '.join(CHOICES)}")
    if choice != "auto":
        return choice == "on"
    return not (VNNI_FLAGS & (cpu_flags() if flags is None else flags))
