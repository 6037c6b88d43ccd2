"""OpenVINO backend: the bundle's ONNX graphs on an x86 CPU, compiled once and cached on disk.

Why beside ONNX Runtime: on Intel and AMD mini-PCs OpenVINO's CPU plugin is what users already
run (Frigate ships it), and on a CPU with native bf16 its `INFERENCE_PRECISION_HINT=bf16` roughly
halves the FP32 latency with no calibration at all. Without native bf16 it emulates bf16 and is
many times slower than f32, so `auto` only picks bf16 where the CPU reports it *and* the bundle
carries a passed bf16 accuracy gate (`edge-calibrate report --openvino-bf16`). Q/DQ INT8 graphs
(either `edge-calibrate quantize` target) run as INT8 here.

Compiling a graph takes seconds (the base `hoi` ~2 s); the compiled model is exported to a cache
file named by the graph member's sha256, the precision, the threads, the CPU and the OpenVINO
version, so a restart imports it instead. A damaged cache file is compiled again and replaced.

Inputs are bound as tensors that share the caller's numpy memory, and a binding is kept while
the caller passes the same array object: the decoder's KV cache (per-layer views of one buffer,
written in place) and the cross K/V are bound once per caption, not copied per token. Outputs
are copied out, so a result stays valid after the next run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from h2a.runtime.errors import BackendError, InputError
from h2a.runtime.graphs import TensorInfo

if TYPE_CHECKING:
    import openvino as ov

log = logging.getLogger("h2a.openvino")

PRECISION_HINTS = ("auto", "f32", "bf16")
#: OpenVINO's names for the precision hint.
OV_PRECISION = {"f32": "f32", "bf16": "bf16"}
CACHE_ENV = "H2A_CACHE_DIR"
DEVICE = "CPU"


def _openvino() -> ModuleType:
    try:
        import openvino
    except ImportError:
        raise BackendError("openvino is not installed (pip install 'hoi2anomaly-edge[openvino]')") from None
    return openvino


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "h2a"
    )
    return Path(root) / "openvino"


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as OpenVINO reports it."""
    core = _core()
    return "BF16" in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")


def version() -> str:
    return str(_openvino().get_version())


_CORE: ov.Core | None = None


def _core() -> ov.Core:
    """One Core per process: it holds the plugin and its thread pools."""
    global _CORE
    if _CORE is None:
        _CORE = _openvino().Core()
    return _CORE


def resolve_precision(hint: str, gate_passed: bool) -> str:
    """`auto` -> bf16 where the CPU has it natively and the bundle's bf16 gate passed, else f32.
    An explicit bf16 is honoured, with a warning for each reason it may disappoint."""
    if hint not in PRECISION_HINTS:
        raise InputError(f"OpenVINO precision {hint!r}: expected one of {', '.join(PRECISION_HINTS)}")
    native = native_bf16()
    if hint == "auto":
        return "bf16" if native and gate_passed else "f32"
    if hint == "bf16":
        if not native:
            log.warning("this CPU has no native bf16: OpenVINO emulates it, which is slower than f32")
        if not gate_passed:
            log.warning(
                "bf16 has not passed the accuracy gate for this bundle "
                "(edge-calibrate report --fp32 BUNDLE --openvino-bf16 --data DIR)"
            )
    return hint


def cache_key(member_sha256: str, precision: str, threads: int) -> str:
    """File name of a compiled graph: everything the compiled code depends on."""
    core = _core()
    cpu = str(core.get_property(DEVICE, "FULL_DEVICE_NAME"))
    caps = ",".join(sorted(core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")))
    host = hashlib.sha256(f"{cpu}|{caps}|{version()}".encode()).hexdigest()[:16]
    return f"{member_sha256[:32]}-{precision}-t{threads}-{host}.blob"


def compile_config(precision: str, threads: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
    }
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def compile_graph(
    model: bytes, member_sha256: str, precision: str, threads: int, cache_dir: Path | None
) -> tuple[ov.CompiledModel, bool]:
    """-> (compiled model, whether it came from the cache)."""
    core = _core()
    config = compile_config(precision, threads)
    path = None if cache_dir is None else cache_dir / cache_key(member_sha256, precision, threads)
    if path is not None and path.is_file():
        try:
            return core.import_model(path.read_bytes(), DEVICE, config), True
        except RuntimeError:
            log.warning("%s: damaged OpenVINO cache file; compiling the graph again", path)
    try:
        compiled = core.compile_model(core.read_model(model), DEVICE, config)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BackendError(f"OpenVINO cannot compile this graph: {first}") from None
    if path is not None:
        _write_atomic(path, compiled.export_model().getvalue())
    return compiled, False


def _write_atomic(path: Path, data: bytes) -> None:
    """A cache file is complete or absent: a crash mid-write leaves only a temporary file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as err:  # a read-only or full disk costs the next start a compile, nothing more
        log.warning("cannot write the OpenVINO cache %s: %s", path, err)


class OvGraph:
    def __init__(
        self,
        model: bytes,
        member_sha256: str,
        precision: str = "f32",
        threads: int = 0,
        cache_dir: Path | None = None,
    ) -> None:
        """`precision`: f32 or bf16 (resolved; see `resolve_precision`); `threads`: 0 = OpenVINO's
        default (one per core); `cache_dir`: None compiles every time."""
        if precision not in OV_PRECISION:
            raise InputError(f"OpenVINO precision {precision!r}: expected f32 or bf16")
        self.precision = precision
        self._compiled, self.from_cache = compile_graph(model, member_sha256, precision, threads, cache_dir)
        self._request = self._compiled.create_infer_request()
        self._inputs = [p.get_any_name() for p in self._compiled.inputs]
        self._outputs = [p.get_any_name() for p in self._compiled.outputs]
        self._bound: dict[str, np.ndarray] = {}  # input name -> the array its tensor shares memory with
        self.bindings = 0  # inputs (re)bound so far: a decoder step that reuses its buffers adds none

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def signature(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(port: Any) -> TensorInfo:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            return TensorInfo(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).name, shape)

        return [info(p) for p in self._compiled.inputs], [info(p) for p in self._compiled.outputs]

    def _bind(self, name: str, array: np.ndarray) -> None:
        """Share `array`'s memory with the request unless it is already bound. Holding the array in
        `_bound` keeps it alive, so an equal `id` can never be a different, newer array."""
        if self._bound.get(name) is array:
            return
        if not (array.flags.c_contiguous and array.flags.aligned):
            array = np.ascontiguousarray(array)  # a private copy, bound until the next call
        self._request.set_tensor(name, _openvino().Tensor(array, shared_memory=True))
        self._bound[name] = array
        self.bindings += 1

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self._inputs:
            if name not in inputs:
                raise BackendError(f"graph input {name!r} was not given")
            self._bind(name, inputs[name])
        self._request.infer()
        return {name: self._request.get_tensor(name).data.copy() for name in self._outputs}
