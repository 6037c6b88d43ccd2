"""Backends run one graph: named numpy inputs in, named numpy outputs out.

The interface is deliberately this small so that ONNX Runtime (CPU, or its CUDA/TensorRT
execution providers) and a native TensorRT engine are interchangeable behind the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from h2a.runtime.graphs import TensorInfo


class GraphRunner(Protocol):
    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def signature(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """(inputs, outputs) as the loaded graph declares them, for the contract check."""
        ...

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class DevicePointer:
    """An input that already lives on the GPU (the CUDA pre-processing output, a device-to-device
    hand-off); only the TensorRT backend accepts it."""

    ptr: int
    shape: tuple[int, ...]
