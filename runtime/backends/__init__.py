"""Backends run one graph: named numpy inputs in, named numpy outputs out.

The interface is deliberately this small so that ONNX Runtime (CPU, or its CUDA/TensorRT
execution providers) and a native TensorRT engine are interchangeable behind the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from h2a.runtime.graphs import TensorInfo

if TYPE_CHECKING:
    from h2a.runtime.backends.cuda_memory import Cuda


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


class PendingRun(Protocol):
    def wait(self) -> tuple[dict[str, np.ndarray], dict[str, DevicePointer]]:
        """Block until the run finished; -> (host copies of the outputs asked for, device outputs)."""
        ...


class DeviceGraphRunner(GraphRunner, Protocol):
    """A graph on the GPU (the TensorRT backend): inputs may be DevicePointers, outputs can stay on
    the device, and a run can be queued without waiting for it."""

    cuda: Cuda
    stream: int

    def run_device(
        self, inputs: dict[str, Any], host_outputs: set[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, DevicePointer]]:
        """Run and wait; -> (the `host_outputs` copied to host, every output's device buffer)."""
        ...

    def enqueue(self, inputs: dict[str, Any], host_outputs: set[str], slot: int) -> PendingRun:
        """Queue a run into `slot`'s buffers; the caller waits with `PendingRun.wait`."""
        ...
