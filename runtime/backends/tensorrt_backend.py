"""TensorRT backend (TensorRT 10 name-based tensor API; targets 10.3, JetPack 6).

Every call into TensorRT lives in this module and `export_tools/export/tensorrt_build.py`.
Before deserializing, the bundle's recorded TensorRT version and GPU compute capability are
compared with this device's, and a mismatch is refused with one line (a serialized engine only
runs on the TensorRT version and GPU family it was built for).

Host buffers are pinned and reused; each graph has its own stream; inputs may be given as device
pointers (`DevicePointer`: the GPU pre-processing's output, the decoder's device KV cache), and
`run_device` leaves outputs on the device for the caller to consume on the graph's stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorrt as trt

from h2a.runtime.backends import DevicePointer
from h2a.runtime.backends.cuda_memory import Cuda
from h2a.runtime.backends.engine_compat import check_engine_compat
from h2a.runtime.errors import BackendError
from h2a.runtime.graphs import TensorInfo


def check_device(bundle_trt: dict[str, Any], cuda: Cuda) -> None:
    """Refuse an engine built by another TensorRT build or for another GPU family."""
    check_engine_compat(bundle_trt, str(trt.__version__), cuda.compute_capability())


class _Logger(trt.ILogger):
    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.messages: list[str] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        if severity <= trt.ILogger.Severity.WARNING:
            self.messages.append(msg)


_SHARED: tuple[_Logger, trt.Runtime] | None = None


def shared_runtime() -> tuple[_Logger, trt.Runtime]:
    """One logger and one runtime for the process: TensorRT keeps a single global logger (the
    first one registered), so a logger per graph would miss the messages of every other graph."""
    global _SHARED
    if _SHARED is None:
        logger = _Logger()
        _SHARED = (logger, trt.Runtime(logger))
    return _SHARED


def _bind(ok: bool, what: str, name: str, logger: _Logger) -> None:
    if not ok:
        raise BackendError(
            f"TensorRT refused {what} of {name}: " + ("; ".join(logger.messages[-2:]) or "see log")
        )


class TrtGraph:
    def __init__(self, engine_bytes: bytes, cuda: Cuda) -> None:
        self.cuda = cuda
        self.logger, self.runtime = shared_runtime()
        engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise BackendError(
                "TensorRT could not deserialize an engine: " + "; ".join(self.logger.messages[-2:])
            )
        self.engine: trt.ICudaEngine = engine
        context = engine.create_execution_context()
        if context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        self.context: trt.IExecutionContext = context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtype = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.stream = cuda.stream_create()
        # Buffers per (tensor, slot): a caller that alternates slots (`enqueue`) can queue the next
        # run while it still reads this run's outputs. `run` and `run_device` use slot 0.
        self._device: dict[tuple[str, int], tuple[int, int]] = {}  # -> (pointer, capacity in bytes)
        self._host: dict[tuple[str, int], np.ndarray] = {}
        self._done: dict[int, int] = {}  # slot -> event recorded after its run and downloads

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def signature(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(name: str) -> TensorInfo:
            dims = self.engine.get_tensor_shape(name)  # -1 where an optimization profile decides
            shape = tuple(None if int(dims[i]) < 0 else int(dims[i]) for i in range(len(dims)))
            return TensorInfo(name, self._dtype[name].name, shape)

        return [info(n) for n in self._inputs], [info(n) for n in self._outputs]

    def _buffer(self, name: str, shape: tuple[int, ...], slot: int = 0) -> tuple[int, np.ndarray]:
        nbytes = int(np.prod(shape)) * self._dtype[name].itemsize
        key = (name, slot)
        ptr, capacity = self._device.get(key, (0, 0))
        if nbytes > capacity:  # grow once; steady state allocates nothing
            if ptr:
                self.cuda.stream_sync(self.stream)  # nothing in flight still reads the old buffers
                self.cuda.device_free(ptr)
                self.cuda.pinned_free(self._host[key])
            ptr = self.cuda.device_alloc(nbytes)
            self._device[key] = (ptr, nbytes)
            self._host[key] = self.cuda.pinned_empty(
                (max(1, nbytes // self._dtype[name].itemsize),), self._dtype[name]
            )
        host = self._host[key][: int(np.prod(shape))].reshape(shape)
        return ptr, host

    def close(self) -> None:
        """Free the buffers, then TensorRT's objects (context before engine), while CUDA is alive."""
        self.cuda.stream_sync(self.stream)
        for key, (ptr, _) in self._device.items():
            self.cuda.device_free(ptr)
            self.cuda.pinned_free(self._host[key])
        for event in self._done.values():
            self.cuda.event_destroy(event)
        self._device.clear()
        self._host.clear()
        self._done.clear()
        del self.context
        del self.engine

    def run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        host, _ = self.run_device(inputs, set(self._outputs))
        return host

    def run_device(
        self, inputs: dict[str, Any], host_outputs: set[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, DevicePointer]]:
        """Inputs as arrays (uploaded through pinned buffers) or DevicePointers (bound as they are);
        -> (copies of the `host_outputs`, every output's device buffer). The device buffers hold
        this run's outputs until the next run of this graph: a consumer on another stream must
        copy them (or finish) before then; on this graph's stream, order alone suffices."""
        return self.enqueue(inputs, host_outputs, slot=0).wait()

    def enqueue(self, inputs: dict[str, Any], host_outputs: set[str], slot: int) -> PendingRun:
        """Queue a run on this graph's stream without waiting for it. Its outputs go to `slot`'s
        buffers, which the next run of another slot leaves alone: a caller alternating two slots
        queues frame t+1 while it still reads frame t's outputs. Reusing a slot first waits (on the
        host) until that slot's previous run finished, since its pinned inputs are rewritten."""
        ctx = self.context
        done = self._done.get(slot)
        if done is None:
            done = self._done[slot] = self.cuda.event_create()
        self.cuda.event_sync(done)  # this slot's pinned buffers are free again
        for name in self._inputs:
            value = inputs[name]
            if isinstance(value, DevicePointer):
                _bind(ctx.set_input_shape(name, value.shape), "the shape", name, self.logger)
                _bind(ctx.set_tensor_address(name, value.ptr), "the address", name, self.logger)
                continue
            array = np.ascontiguousarray(value, dtype=self._dtype[name])
            ptr, host = self._buffer(name, array.shape, slot)
            host[...] = array
            _bind(ctx.set_input_shape(name, array.shape), "the shape", name, self.logger)
            _bind(ctx.set_tensor_address(name, ptr), "the address", name, self.logger)
            self.cuda.htod_async(ptr, host, self.stream)
        device: dict[str, DevicePointer] = {}
        for name in self._outputs:
            dims = ctx.get_tensor_shape(name)
            shape = tuple(int(dims[i]) for i in range(len(dims)))
            ptr, _ = self._buffer(name, shape, slot)
            _bind(ctx.set_tensor_address(name, ptr), "the address", name, self.logger)
            device[name] = DevicePointer(ptr, shape)
        if not ctx.execute_async_v3(self.stream):
            raise BackendError("TensorRT execution failed: " + "; ".join(self.logger.messages[-2:]))
        staged = {}
        for name in host_outputs:
            ptr, host = self._buffer(name, device[name].shape, slot)
            self.cuda.dtoh_async(host, ptr, self.stream)
            staged[name] = host
        self.cuda.event_record(done, self.stream)
        return PendingRun(self.cuda, done, staged, device)


class PendingRun:
    """A queued run: `wait` blocks until it finished and returns (host copies, device outputs)."""

    def __init__(
        self, cuda: Cuda, done: int, staged: dict[str, np.ndarray], device: dict[str, DevicePointer]
    ) -> None:
        self.cuda, self.done, self.staged, self.device = cuda, done, staged, device

    def wait(self) -> tuple[dict[str, np.ndarray], dict[str, DevicePointer]]:
        self.cuda.event_sync(self.done)
        return {name: host.copy() for name, host in self.staged.items()}, self.device
