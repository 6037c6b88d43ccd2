"""The thin CUDA layer the TensorRT backend needs: device buffers, pinned host buffers, streams
and async copies. Two implementations: NVIDIA's cuda-python (`cuda.bindings`; the default, its
runtime API works on the primary context from any thread, the caption worker's included) and
pycuda (JetPack users often have it), which pushes the device's primary context around every call
so that it works from any thread too. Nothing else in the project touches CUDA directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from h2a.runtime.errors import BackendError


class Cuda(Protocol):
    def device_alloc(self, nbytes: int) -> int: ...
    def device_free(self, ptr: int) -> None: ...
    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray: ...
    def pinned_free(self, array: np.ndarray) -> None: ...
    def stream_create(self) -> int: ...
    def stream_sync(self, stream: int) -> None: ...
    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None: ...
    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None: ...
    def dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None: ...
    def dtod_2d_async(
        self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int, stream: int
    ) -> None: ...
    def zero_async(self, ptr: int, nbytes: int, stream: int) -> None: ...
    def event_create(self) -> int: ...
    def event_record(self, event: int, stream: int) -> None: ...
    def event_sync(self, event: int) -> None: ...
    def stream_wait_event(self, stream: int, event: int) -> None: ...
    def event_destroy(self, event: int) -> None: ...
    def compute_capability(self) -> tuple[int, int]: ...


class PyCuda:
    """pycuda on the device's primary context, pushed and popped around every call: a context made
    current on one thread (as `pycuda.autoinit` does) is not current on the caption worker's."""

    def __init__(self, device: int = 0) -> None:
        try:
            import pycuda.driver as drv
        except ImportError:
            raise BackendError("pycuda is not installed (JetPack: pip install pycuda)") from None
        drv.init()
        self.drv = drv
        self.context = drv.Device(device).retain_primary_context()
        self._allocs: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}
        self._pinned: dict[int, Any] = {}
        self._events: dict[int, Any] = {}

    @contextlib.contextmanager
    def _current(self) -> Iterator[None]:
        self.context.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def device_alloc(self, nbytes: int) -> int:
        with self._current():
            alloc = self.drv.mem_alloc(max(1, nbytes))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def device_free(self, ptr: int) -> None:
        with self._current():
            self._allocs.pop(ptr).free()

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        with self._current():
            array = self.drv.pagelocked_empty(shape, dtype)
        self._pinned[array.ctypes.data] = array
        return array

    def pinned_free(self, array: np.ndarray) -> None:
        held = self._pinned.pop(array.ctypes.data, None)
        if held is not None:
            with self._current():
                held.base.free()

    def stream_create(self) -> int:
        with self._current():
            stream = self.drv.Stream()
        self._streams[stream.handle] = stream
        return int(stream.handle)

    def stream_sync(self, stream: int) -> None:
        with self._current():
            self._streams[stream].synchronize()

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        with self._current():
            self.drv.memcpy_htod_async(dst, src, self._streams[stream])

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        with self._current():
            self.drv.memcpy_dtoh_async(dst, src, self._streams[stream])

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        with self._current():
            self.drv.memcpy_dtod_async(dst, src, nbytes, self._streams[stream])

    def dtod_2d_async(
        self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int, stream: int
    ) -> None:
        copy = self.drv.Memcpy2D()
        copy.set_src_device(src)
        copy.set_dst_device(dst)
        copy.src_pitch, copy.dst_pitch, copy.width_in_bytes, copy.height = src_pitch, dst_pitch, width, height
        with self._current():
            copy(self._streams[stream])

    def zero_async(self, ptr: int, nbytes: int, stream: int) -> None:
        with self._current():
            self.drv.memset_d8_async(ptr, 0, nbytes, self._streams[stream])

    def event_create(self) -> int:
        with self._current():
            event = self.drv.Event(self.drv.event_flags.DISABLE_TIMING)
        key = id(event)
        self._events[key] = event
        return key

    def event_record(self, event: int, stream: int) -> None:
        with self._current():
            self._events[event].record(self._streams[stream])

    def event_sync(self, event: int) -> None:
        with self._current():
            self._events[event].synchronize()

    def stream_wait_event(self, stream: int, event: int) -> None:
        with self._current():
            self._streams[stream].wait_for_event(self._events[event])

    def event_destroy(self, event: int) -> None:
        with self._current():
            del self._events[event]

    def compute_capability(self) -> tuple[int, int]:
        with self._current():
            major, minor = self.drv.Context.get_device().compute_capability()
        return int(major), int(minor)


class CudaPython:
    """NVIDIA's cuda-python runtime bindings (`cuda.bindings.runtime`, or the older `cuda.cudart`)."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart
            except ImportError:
                raise BackendError("cuda-python is not installed (pip install cuda-python)") from None
        self.rt = cudart
        self._pinned: dict[int, int] = {}  # array address -> cudaMallocHost pointer (the same)

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            text = self.rt.cudaGetErrorString(err)[-1]
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise BackendError(f"CUDA call failed: {getattr(err, 'name', err)} ({text})")
        return rest[0] if len(rest) == 1 else rest

    def device_alloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(1, nbytes))))

    def device_free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr))

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = int(self._check(self.rt.cudaMallocHost(max(1, nbytes))))
        import ctypes

        buf = (ctypes.c_byte * max(1, nbytes)).from_address(ptr)
        array = np.frombuffer(memoryview(buf), dtype=dtype, count=int(np.prod(shape))).reshape(shape)
        self._pinned[array.ctypes.data] = ptr
        return array

    def pinned_free(self, array: np.ndarray) -> None:
        """Free a buffer from `pinned_empty`; the array must not be used afterwards."""
        ptr = self._pinned.pop(array.ctypes.data, None)
        if ptr is not None:
            self._check(self.rt.cudaFreeHost(ptr))

    def stream_create(self) -> int:
        return int(self._check(self.rt.cudaStreamCreate()))

    def stream_sync(self, stream: int) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream))

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream))

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._check(self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream))

    def dtod_2d_async(
        self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int, stream: int
    ) -> None:
        """`height` rows of `width` bytes, each row `src_pitch` apart at the source, `dst_pitch` at
        the destination: one call writes a strided slice (the decoder's K/V at one position)."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._check(self.rt.cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, height, kind, stream))

    def zero_async(self, ptr: int, nbytes: int, stream: int) -> None:
        self._check(self.rt.cudaMemsetAsync(ptr, 0, nbytes, stream))

    def event_create(self) -> int:
        """An event for ordering only: no timing, so recording it costs next to nothing."""
        flags = self.rt.cudaEventDisableTiming
        return int(self._check(self.rt.cudaEventCreateWithFlags(flags)))

    def event_record(self, event: int, stream: int) -> None:
        self._check(self.rt.cudaEventRecord(event, stream))

    def event_sync(self, event: int) -> None:
        """Block this thread until the event's last record ran (at once if never recorded)."""
        self._check(self.rt.cudaEventSynchronize(event))

    def stream_wait_event(self, stream: int, event: int) -> None:
        """Work queued on `stream` after this call waits for the event's most recent record."""
        self._check(self.rt.cudaStreamWaitEvent(stream, event, 0))

    def event_destroy(self, event: int) -> None:
        self._check(self.rt.cudaEventDestroy(event))

    def compute_capability(self) -> tuple[int, int]:
        device = int(self._check(self.rt.cudaGetDevice()))
        props = self._check(self.rt.cudaGetDeviceProperties(device))
        return int(props.major), int(props.minor)


def open_cuda(prefer: str = "auto") -> Cuda:
    """cuda-python first, then pycuda; `prefer` forces one."""
    errors = []
    for name, cls in (("cuda-python", CudaPython), ("pycuda", PyCuda)):
        if prefer not in ("auto", name):
            continue
        try:
            return cls()
        except BackendError as err:
            errors.append(str(err))
    raise BackendError("no CUDA binding: " + "; ".join(errors))
