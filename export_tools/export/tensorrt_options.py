"""What an engine build is asked to do, and the version- and device-dependent choices it makes.

Kept apart from `tensorrt_build.py` so that every rule here is plain Python and tested where
TensorRT cannot be installed; `tensorrt_build.py` only carries the choices out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h2a.runtime.errors import BackendError

#: An 8 GB Orin shares its memory with the CPU; 2 GiB of builder workspace leaves room for both.
DEFAULT_WORKSPACE_MB = 2048
DEFAULT_MAX_BATCH = 1
#: Graphs that go on Orin's DLA when --dla-core is given: the CNN-heavy `hoi`. The caption graphs
#: are transformer layers (LayerNorm, Softmax, dynamic K/V) the DLA cannot run; putting them there
#: would only add GPU fallbacks and DLA<->GPU copies.
DLA_GRAPHS = ("hoi",)


@dataclass(frozen=True)
class BuildOptions:
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    fp16: bool = True  # FP16 for whatever is not INT8 (and the fallback of Q/DQ layers TensorRT can't fuse)
    max_batch: int = DEFAULT_MAX_BATCH
    dla_core: int | None = None  # Orin's DLA, for DLA_GRAPHS only; layers it can't run fall back to the GPU
    timing_cache: Path | None = None  # reused across builds: a rebuild skips most tactic timing
    legacy_calibrator: Any = None  # a trt.IInt8EntropyCalibrator2 for `hoi` (TensorRT < 10.1)


def version_tuple(version: str) -> tuple[int, ...]:
    """'8.6.2.3' -> (8, 6, 2, 3); a suffix such as '10.3.0.post1' is ignored from there on."""
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits or not piece[0].isdigit():
            break
        parts.append(int(digits))
    if not parts:
        raise BackendError(f"cannot read the TensorRT version {version!r}")
    return tuple(parts)


def explicit_batch_flags(version: str, explicit_batch_bit: int) -> int:
    """`create_network` flags: TensorRT 8.x defaults to implicit batch, which its ONNX parser
    refuses; from 10.0 explicit batch is the only mode and the flag is deprecated."""
    return 1 << explicit_batch_bit if version_tuple(version)[0] < 10 else 0


def dla_core_for(graph: str, options: BuildOptions) -> int | None:
    return options.dla_core if graph in DLA_GRAPHS else None


def check_dla(graph: str, options: BuildOptions, int8: bool) -> None:
    """The DLA runs FP16 or INT8 only: an FP32 build of a DLA graph is refused, not silently moved
    to the GPU."""
    if dla_core_for(graph, options) is not None and not (options.fp16 or int8):
        raise BackendError(
            f"--dla-core needs FP16 or INT8 for {graph}: drop --no-fp16, or give an INT8 bundle"
        )
