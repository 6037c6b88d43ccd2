"""CUDA's ordering rules on the CPU, for testing the GPU path's streams and events without a GPU.

`SimCuda` implements the project's `Cuda` protocol (runtime/backends/cuda_memory.py) over host
memory, with one twist that makes it a test rather than a mock: work queued on a stream runs only
when something forces it (a `stream_sync`, an `event_sync`, or another stream's queued wait on an
event recorded there), and never earlier. A hand-off that forgets an event therefore reads what
the memory held before: fresh allocations hold NaN (0xFF bytes) and freed pinned buffers are
poisoned, so a missing wait or a use after free changes the numbers a test compares.

`FakeTensorRT` is a `tensorrt` module whose "engines" are ONNX graphs run by ONNX Runtime as a
queued stream operation, reading and writing device memory at the bound addresses: enough of the
TensorRT 10 name-based API for `runtime/backends/tensorrt_backend.py` to run unchanged.
"""

from __future__ import annotations

import enum
import importlib.machinery
import threading
import types
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

Op = Callable[[], None]


class _Event:
    def __init__(self) -> None:
        self.recorded = 0  # version of the latest record
        self.where: dict[int, int] = {}  # version -> stream it was recorded on
        self.completed: set[int] = set()


class SimCuda:
    def __init__(self, compute_capability: tuple[int, int] = (8, 7)) -> None:
        self.lock = threading.RLock()  # the caption worker's thread queues work too
        self._allocs: dict[int, np.ndarray] = {}  # base pointer -> bytes
        self._next_ptr = 0x10000
        self._streams: dict[int, deque[Op]] = {}
        self._events: dict[int, _Event] = {}
        self._next_handle = 1
        self._cc = compute_capability
        self.copies: list[tuple[str, int, int]] = []  # (kind, stream, bytes), in queue order

    # memory
    def device_alloc(self, nbytes: int) -> int:
        with self.lock:
            ptr = self._next_ptr
            self._next_ptr += (max(1, nbytes) + 0xFFF) & ~0xFFF
            self._allocs[ptr] = np.full(max(1, nbytes), 0xFF, np.uint8)  # NaN as float32
            return ptr

    def device_free(self, ptr: int) -> None:
        with self.lock:
            del self._allocs[ptr]

    def view(self, ptr: int, nbytes: int) -> np.ndarray:
        """The device bytes [ptr, ptr + nbytes): must lie inside one live allocation."""
        for base, data in self._allocs.items():
            if base <= ptr and ptr + nbytes <= base + data.size:
                return data[ptr - base : ptr - base + nbytes]
        raise AssertionError(f"device access outside any live allocation: {ptr:#x} + {nbytes}")

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        return np.zeros(shape, dtype)

    def pinned_free(self, array: np.ndarray) -> None:
        array.view(np.uint8)[...] = 0xFF  # a copy still queued from it now reads NaN

    # streams and events
    def stream_create(self) -> int:
        with self.lock:
            handle = self._handle()
            self._streams[handle] = deque()
            return handle

    def launch(self, stream: int, op: Op) -> None:
        """Queue work on a stream (what a kernel launch or an engine's enqueue does)."""
        with self.lock:
            self._streams[stream].append(op)

    def stream_sync(self, stream: int) -> None:
        with self.lock:
            queue = self._streams[stream]
            while queue:
                queue.popleft()()

    def event_create(self) -> int:
        with self.lock:
            handle = self._handle()
            self._events[handle] = _Event()
            return handle

    def event_record(self, event: int, stream: int) -> None:
        with self.lock:
            ev = self._events[event]
            ev.recorded += 1
            version = ev.recorded
            ev.where[version] = stream
            self.launch(stream, lambda: ev.completed.add(version))

    def event_sync(self, event: int) -> None:
        with self.lock:
            self._run_until(event, self._events[event].recorded)

    def stream_wait_event(self, stream: int, event: int) -> None:
        with self.lock:
            version = self._events[event].recorded  # CUDA: the record current at this call
            self.launch(stream, lambda: self._run_until(event, version))

    def event_destroy(self, event: int) -> None:
        with self.lock:
            del self._events[event]

    def _run_until(self, event: int, version: int) -> None:
        ev = self._events[event]
        if version == 0:
            return  # never recorded: CUDA treats it as complete
        queue = self._streams[ev.where[version]]
        while version not in ev.completed:
            queue.popleft()()

    def _handle(self) -> int:
        self._next_handle += 1
        return self._next_handle

    # copies
    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        nbytes = src.nbytes
        self.copies.append(("htod", stream, nbytes))
        self.launch(stream, lambda: self.view(dst, nbytes).__setitem__(..., src.reshape(-1).view(np.uint8)))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        nbytes = dst.nbytes
        self.copies.append(("dtoh", stream, nbytes))
        self.launch(stream, lambda: dst.reshape(-1).view(np.uint8).__setitem__(..., self.view(src, nbytes)))

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self.copies.append(("dtod", stream, nbytes))
        self.launch(stream, lambda: self.view(dst, nbytes).__setitem__(..., self.view(src, nbytes).copy()))

    def dtod_2d_async(
        self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int, stream: int
    ) -> None:
        def copy() -> None:
            for row in range(height):
                self.view(dst + row * dst_pitch, width)[...] = self.view(src + row * src_pitch, width)

        self.copies.append(("dtod", stream, width * height))
        self.launch(stream, copy)

    def zero_async(self, ptr: int, nbytes: int, stream: int) -> None:
        self.launch(stream, lambda: self.view(ptr, nbytes).__setitem__(..., 0))

    def compute_capability(self) -> tuple[int, int]:
        return self._cc

    # helpers for stand-ins
    def read(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dt = np.dtype(dtype)
        return self.view(ptr, int(np.prod(shape)) * dt.itemsize).view(dt).reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray) -> None:
        self.view(ptr, array.nbytes)[...] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)


class SimKernel:
    """The letterbox kernel as a queued operation: reads the device frame, runs the OpenCV
    reference, writes the device input (what `CudaPreprocessor` does on a GPU)."""

    def __init__(self, cuda: SimCuda, preprocess: Any) -> None:
        self.cuda, self.preprocess = cuda, preprocess

    def __call__(self, frames: list[Any], dst_ptr: int, stream: int = 0) -> list[Any]:
        from h2a.runtime.preprocess import letterbox_geometry

        (frame,) = frames

        def run() -> None:
            image = self.cuda.read(frame.ptr, (frame.height, frame.width, 3), np.uint8)
            images, _ = self.preprocess(image)
            self.cuda.write(dst_ptr, images.astype(np.float32))

        self.cuda.launch(stream, run)
        return [letterbox_geometry(frame.width, frame.height, self.preprocess.size)]


# ---- a tensorrt module over ONNX Runtime ----


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class _ILogger:
    Severity = _Severity

    def __init__(self) -> None:
        pass


class _TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


_NP = {"tensor(float)": np.float32, "tensor(int64)": np.int64}


class _Engine:
    def __init__(self, onnx_bytes: bytes, cuda: SimCuda) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.cuda = cuda
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.names = [*self.inputs, *self.outputs]
        self.num_io_tensors = len(self.names)
        self.output_shapes: dict[tuple[Any, ...], dict[str, tuple[int, ...]]] = {}

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> _TensorIOMode:
        return _TensorIOMode.INPUT if name in self.inputs else _TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        info = self.inputs.get(name) or self.outputs[name]
        return _NP[info.type]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        info = self.inputs.get(name) or self.outputs[name]
        return tuple(d if isinstance(d, int) else -1 for d in info.shape)

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.runs = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(int(v) for v in shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        """Output shapes for the bound input shapes, as TensorRT infers them (here: by a run on
        zeros, once per set of input shapes)."""
        key = tuple(sorted(self.shapes.items()))
        if key not in self.engine.output_shapes:
            feeds = {n: np.zeros(s, self.engine.get_tensor_dtype(n)) for n, s in self.shapes.items()}
            values = self.engine.session.run(list(self.engine.outputs), feeds)
            self.engine.output_shapes[key] = {
                n: tuple(np.shape(v)) for n, v in zip(self.engine.outputs, values, strict=True)
            }
        return self.engine.output_shapes[key][name]

    def execute_async_v3(self, stream: int) -> bool:
        engine, cuda = self.engine, self.engine.cuda
        bound = {n: (self.addresses[n], self.shapes[n]) for n in engine.inputs}
        outs = {n: (self.addresses[n], self.get_tensor_shape(n)) for n in engine.outputs}
        self.runs += 1

        def run() -> None:
            feeds = {n: cuda.read(p, s, engine.get_tensor_dtype(n)) for n, (p, s) in bound.items()}
            results = engine.session.run(list(outs), feeds)
            for (name, (ptr, _)), value in zip(outs.items(), results, strict=True):
                cuda.write(ptr, np.asarray(value, engine.get_tensor_dtype(name)))

        cuda.launch(stream, run)
        return True


def fake_tensorrt(cuda: SimCuda, version: str = "10.3.0.sim") -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    module.__version__ = version  # type: ignore[attr-defined]
    module.ILogger = _ILogger  # type: ignore[attr-defined]
    module.TensorIOMode = _TensorIOMode  # type: ignore[attr-defined]
    module.nptype = lambda dtype: dtype  # type: ignore[attr-defined]

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> _Engine:
            return _Engine(data, cuda)

    module.Runtime = Runtime  # type: ignore[attr-defined]
    return module
