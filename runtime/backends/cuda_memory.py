"""The thin CUDA layer the TensorRT backend needs: device buffers, pinned host buffers, streams
and async copies. Two implementations: pycuda (what JetPack users usually have) and NVIDIA's
cuda-python (`cuda.bindings`, present on the desktop GPU machines). Nothing else in the project
touches CUDA directly.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from h2a.runtime.errors import BackendError


class Cuda(Protocol):
    def device_alloc(self, nbytes: int) -> int: ...
    def device_free(self, ptr: int) -> None: ...
    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray: ...
    def stream_create(self) -> int: ...
    def stream_sync(self, stream: int) -> None: ...
    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None: ...
    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None: ...
    def dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None: ...
    def compute_capability(self) -> tuple[int, int]: ...


class PyCuda:
    def __init__(self) -> None:
        try:
            import pycuda.autoinit  # noqa: F401  (creates the context)
            import pycuda.driver as drv
        except ImportError:
            raise BackendError("pycuda is not installed (JetPack: pip install pycuda)") from None
        self.drv = drv
        self._allocs: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}

    def device_alloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(max(1, nbytes))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def device_free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def stream_create(self) -> int:
        stream = self.drv.Stream()
        self._streams[stream.handle] = stream
        return int(stream.handle)

    def stream_sync(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.drv.memcpy_htod_async(dst, src, self._streams[stream])

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.drv.memcpy_dtoh_async(dst, src, self._streams[stream])

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self.drv.memcpy_dtod_async(dst, src, nbytes, self._streams[stream])

    def compute_capability(self) -> tuple[int, int]:
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

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f"CUDA call failed: {err}")
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
        return np.frombuffer(memoryview(buf), dtype=dtype, count=int(np.prod(shape))).reshape(shape)

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

    def compute_capability(self) -> tuple[int, int]:
        device = int(self._check(self.rt.cudaGetDevice()))
        props = self._check(self.rt.cudaGetDeviceProperties(device))
        return int(props.major), int(props.minor)


def open_cuda(prefer: str = "auto") -> Cuda:
    """pycuda first (JetPack), then cuda-python; `prefer` forces one."""
    errors = []
    for name, cls in (("pycuda", PyCuda), ("cuda-python", CudaPython)):
        if prefer not in ("auto", name):
            continue
        try:
            return cls()
        except BackendError as err:
            errors.append(str(err))
    raise BackendError("no CUDA binding: " + "; ".join(errors))
