"""How a camera frame becomes `hoi`'s input: OpenCV on the CPU (the reference, every backend), or
the CUDA library (`cmake/`) on the TensorRT path, which uploads the uint8 frame and letterboxes it
on the GPU into the device buffer `hoi` reads.

The GPU variant double-buffers the upload so that frame t+1 crosses the bus while `hoi` still
runs on frame t (DESIGN.md, the frame pipeline). Per buffer `b` (frames alternate b = 0, 1):

    host:          wait uploaded[b] (its last copy left the pinned buffer) -> copy frame into pinned[b]
    upload stream: wait consumed[b] -> pinned[b] -> device frame[b] -> record uploaded[b]
    hoi stream:    wait uploaded[b] -> kernel (frame[b] -> input) -> record consumed[b] -> hoi ...

The kernel runs on `hoi`'s own stream, so it writes the single input buffer only after the
previous `hoi` run has read it, with no event; the events order the two streams and the host.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from h2a.runtime.backends import DevicePointer
from h2a.runtime.errors import BackendError
from h2a.runtime.preprocess import Letterbox, Preprocessor


class FrameInput(Protocol):
    description: str

    def __call__(self, frame_bgr: np.ndarray) -> tuple[Any, Letterbox]: ...


class CpuFrameInput:
    def __init__(self, preprocess: Preprocessor) -> None:
        self.preprocess = preprocess
        self.description = "OpenCV on the CPU"

    def __call__(self, frame_bgr: np.ndarray) -> tuple[Any, Letterbox]:
        return self.preprocess(frame_bgr)


#: Frames in flight on the GPU path: the one `hoi` reads and the one being uploaded.
UPLOAD_BUFFERS = 2


class Kernel(Protocol):
    """The letterbox kernel (`CudaPreprocessor`): frames -> the (n, 3, S, S) input, on `stream`."""

    def __call__(self, frames: list[Any], dst_ptr: int, stream: int = 0) -> list[Letterbox]: ...


class GpuFrameInput:
    """Pinned host frame -> device frame (upload stream) -> kernel -> device input (hoi's stream)."""

    def __init__(
        self,
        cuda: Any,
        stream: int,
        preprocess: Preprocessor,
        library_path: str | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        """`kernel` stands in for the library's (tests on a machine without a GPU)."""
        if kernel is None:
            from h2a.runtime.backends.cuda_preprocess import CudaPreprocessor, load_library

            lib = load_library(library_path)
            kernel = CudaPreprocessor(
                preprocess.size,
                tuple(preprocess.mean),
                tuple(preprocess.std),
                preprocess.pad_value,
                library=lib,
            )
            self.description = _kernel_description(lib)
        else:
            self.description = f"CUDA kernel ({type(kernel).__name__})"
        self.kernel = kernel
        self.cuda, self.stream = cuda, stream
        self.upload_stream = cuda.stream_create()
        size = preprocess.size
        self.out_shape = (1, 3, size, size)
        self.out = cuda.device_alloc(int(np.prod(self.out_shape)) * 4)
        self._frames = [0] * UPLOAD_BUFFERS  # device frames
        self._frame_bytes = [0] * UPLOAD_BUFFERS
        self._pinned: list[np.ndarray | None] = [None] * UPLOAD_BUFFERS
        self._uploaded = [cuda.event_create() for _ in range(UPLOAD_BUFFERS)]
        self._consumed = [cuda.event_create() for _ in range(UPLOAD_BUFFERS)]
        self._next = 0

    def __call__(self, frame_bgr: np.ndarray) -> tuple[Any, Letterbox]:
        from h2a.runtime.backends.cuda_preprocess import DeviceFrame

        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 BGR frame, got {frame_bgr.shape} {frame_bgr.dtype}"
            )
        b, self._next = self._next, (self._next + 1) % UPLOAD_BUFFERS
        cuda = self.cuda
        h, w = frame_bgr.shape[:2]
        cuda.event_sync(self._uploaded[b])  # pinned[b] is no longer being read by its last copy
        if frame_bgr.nbytes > self._frame_bytes[b]:  # grow once per larger frame size
            cuda.stream_sync(self.stream)  # no kernel still reads the old device frame
            if self._frames[b]:
                cuda.device_free(self._frames[b])
            old = self._pinned[b]
            if old is not None:
                cuda.pinned_free(old)
            self._frames[b], self._frame_bytes[b] = cuda.device_alloc(frame_bgr.nbytes), frame_bgr.nbytes
            self._pinned[b] = cuda.pinned_empty((frame_bgr.nbytes,), np.dtype(np.uint8))
        pinned = self._pinned[b]
        assert pinned is not None
        host = pinned[: frame_bgr.nbytes].reshape(h, w, 3)
        np.copyto(host, frame_bgr)
        cuda.stream_wait_event(self.upload_stream, self._consumed[b])  # the kernel of frame t-2 read it
        cuda.htod_async(self._frames[b], host, self.upload_stream)
        cuda.event_record(self._uploaded[b], self.upload_stream)
        cuda.stream_wait_event(self.stream, self._uploaded[b])
        (geometry,) = self.kernel([DeviceFrame(self._frames[b], w, h, w * 3)], self.out, self.stream)
        cuda.event_record(self._consumed[b], self.stream)
        return DevicePointer(self.out, self.out_shape), geometry

    def close(self) -> None:
        cuda = self.cuda
        cuda.stream_sync(self.upload_stream)
        cuda.stream_sync(self.stream)
        for ptr in (self.out, *(f for f in self._frames if f)):
            cuda.device_free(ptr)
        for pinned in self._pinned:
            if pinned is not None:
                cuda.pinned_free(pinned)
        for event in (*self._uploaded, *self._consumed):
            cuda.event_destroy(event)


def open_frame_input(backend: str, hoi: Any, preprocess: Preprocessor) -> FrameInput:
    """The GPU path where TensorRT runs `hoi` and the library loads; else OpenCV (and why)."""
    cpu = CpuFrameInput(preprocess)
    if backend != "tensorrt":
        return cpu
    try:
        return GpuFrameInput(hoi.cuda, hoi.stream, preprocess)
    except BackendError as err:
        cpu.description = f"OpenCV on the CPU ({err})"
        return cpu


def describe(backend: str) -> str:
    """What `open_frame_input` would choose here, without touching a GPU (`edge-run --inspect`)."""
    if backend != "tensorrt":
        return "OpenCV on the CPU"
    from h2a.runtime.backends.cuda_preprocess import load_library

    try:
        lib = load_library()
    except BackendError as err:
        return f"OpenCV on the CPU ({err})"
    return _kernel_description(lib)


def _kernel_description(lib: Any) -> str:
    return f"CUDA kernel ({lib._name})"
