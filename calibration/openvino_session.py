"""A candidate graph on OpenVINO, seen as the search sees an ONNX Runtime session.

Under `--target openvino` the `hoi` graph runs on OpenVINO, which executes its symmetric s8 Q/DQ
graph as INT8 with its own kernels and fusions. Both things the search measures differ from ONNX
Runtime's on the same graph: speed (base preset: 89.7 ms on OpenVINO, 366.2 ms on ONNX Runtime,
which runs s8 Q/DQ slower than FP32) and error (tiny preset, random weights: anomaly logits 0.13
from FP32 on OpenVINO, 0.02 on ONNX Runtime). So its candidates are compiled here, as `edge-run
--backend openvino` compiles them (f32 precision hint), and measured on OpenVINO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from h2a.calibration.sensitivity import Threading
from h2a.calibration.weight_store import GraphModel, model_bytes
from h2a.runtime.backends.openvino_backend import OvGraph


@dataclass(frozen=True)
class _Input:
    name: str


class OvSession:
    """The part of `onnxruntime.InferenceSession` the search uses: `get_inputs` and `run`."""

    def __init__(self, model: GraphModel, threading: Threading | None = None) -> None:
        threads = threading.threads if threading is not None else 0
        self.graph = OvGraph(model_bytes(model), "", "f32", threads, None)

    def get_inputs(self) -> list[_Input]:
        return [_Input(n) for n in self.graph.input_names]

    def run(self, names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = self.graph.run(feed)
        return [outputs[n] for n in (names or self.graph.output_names)]
