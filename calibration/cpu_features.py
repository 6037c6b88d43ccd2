"""How wide `edge-calibrate quantize` makes CPU INT8 weights: 7 bits on x86 CPUs without VNNI.

Why 8-bit weights go wrong there, with the measurements: `h2a.runtime.cpu_features`, which the
runtime also uses to warn when an 8-bit bundle meets such a CPU.
"""

from __future__ import annotations

from h2a.runtime.cpu_features import VNNI_FLAGS, cpu_flags

__all__ = ["CHOICES", "reduce_range"]

CHOICES = ("auto", "on", "off")


def reduce_range(choice: str, flags: frozenset[str] | None = None) -> bool:
    """`--reduce-range`: `auto` quantizes weights to 7 bits unless this CPU has VNNI (unknown
    CPUs included: 7 bits cost a little precision, saturation costs far more)."""
    if choice not in CHOICES:
        raise ValueError(f"--reduce-range {choice!r}: expected one of {', '.join(CHOICES)}")
    if choice != "auto":
        return choice == "on"
    return not (VNNI_FLAGS & (cpu_flags() if flags is None else flags))
