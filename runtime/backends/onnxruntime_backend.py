"""ONNX Runtime backend: the default, tested for real on CPU.

Sessions are created from the verified bytes of the bundle (never re-read from disk).

Spinning: ONNX Runtime's worker threads can busy-wait for the next op instead of sleeping. Left
spinning after a run, they steal the core from the next session's loop on a 2-core box (a caption
of 40 tokens was measured at 28 -> 45 ms on these 2-core machines). Sleeping between ops instead
costs a wake-up per op, which is what the INT8 `hoi` graph is short of: its transformer is
hundreds of ops of 0.05-0.1 ms. So a session may spin while one of its runs lasts and must stop
when the run returns (`session.force_spinning_stop`); by default only an INT8 `hoi` spins
(`hoi_spins` in runtime/engine.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from h2a.runtime.errors import BackendError
from h2a.runtime.graphs import TensorInfo

if TYPE_CHECKING:
    import onnxruntime as ort

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
#: ONNX Runtime's element type names -> numpy's.
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


def _onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        raise BackendError("onnxruntime is not installed (pip install 'hoi2anomaly-edge[cpu]')") from None
    return onnxruntime


def session_options(intra_op_threads: int, spin: bool) -> ort.SessionOptions:
    """`spin`: worker threads busy-wait between the ops of one run, never after it."""
    runtime = _onnxruntime()
    options = runtime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OrtGraph:
    def __init__(
        self,
        model: bytes,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int = 0,
        spin: bool = False,
    ) -> None:
        runtime = _onnxruntime()
        available = set(runtime.get_available_providers())
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendError(
                f"ONNX Runtime here has no {', '.join(missing)} (available: {', '.join(sorted(available))})"
            )
        options = session_options(intra_op_threads, spin)
        self._session = runtime.InferenceSession(model, sess_options=options, providers=list(providers))
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def signature(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(arg: ort.NodeArg) -> TensorInfo:
            shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
            return TensorInfo(arg.name, ORT_DTYPES.get(arg.type, arg.type), shape)

        return [info(a) for a in self._session.get_inputs()], [info(a) for a in self._session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, inputs)
        return dict(zip(self._outputs, values, strict=True))
