"""ONNX Runtime backend: the default, tested for real on CPU.

Sessions are created from the verified bytes of the bundle (never re-read from disk). Spinning
worker threads are turned off: on a 2-core edge box they steal time from the other graph's
session and from capture (see ../shared/notes/int8-and-kv-cache.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from h2a.runtime.errors import BackendError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class OrtGraph:
    def __init__(
        self, model: bytes, providers: Sequence[str] = DEFAULT_PROVIDERS, intra_op_threads: int = 0
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed (pip install 'hoi2anomaly-edge[cpu]')") from None
        available = set(ort.get_available_providers())
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendError(
                f"ONNX Runtime here has no {', '.join(missing)} (available: {', '.join(sorted(available))})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(model, sess_options=options, providers=list(providers))
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, inputs)
        return dict(zip(self._outputs, values, strict=True))
