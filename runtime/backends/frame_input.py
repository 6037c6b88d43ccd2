"""How a camera frame becomes `hoi`'s input: OpenCV on the CPU (the reference, every backend), or
the CUDA library (`cmake/`) on the TensorRT path, which uploads the uint8 frame and letterboxes it
on the GPU into the device buffer `hoi` reads.

The GPU variant enqueues on the `hoi` graph's own stream, so TensorRT's run is ordered after the
kernel with no extra synchronisation, and the device buffer is only rewritten by the next frame,
after `run` has synchronised that stream.
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


class GpuFrameInput:
    """Pinned host frame -> device frame -> kernel -> device input, all on `stream`."""

    def __init__(
        self, cuda: Any, stream: int, preprocess: Preprocessor, library_path: str | None = None
    ) -> None:
        from h2a.runtime.backends.cuda_preprocess import CudaPreprocessor, load_library

        lib = load_library(library_path)
        self.cuda, self.stream = cuda, stream
        self.kernel = CudaPreprocessor(
            preprocess.size, tuple(preprocess.mean), tuple(preprocess.std), preprocess.pad_value, library=lib
        )
        size = preprocess.size
        self.out_shape = (1, 3, size, size)
        self.out = cuda.device_alloc(int(np.prod(self.out_shape)) * 4)
        self._frame_ptr, self._frame_bytes = 0, 0
        self._pinned: np.ndarray | None = None
        self.description = _kernel_description(lib)

    def __call__(self, frame_bgr: np.ndarray) -> tuple[Any, Letterbox]:
        from h2a.runtime.backends.cuda_preprocess import DeviceFrame

        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 BGR frame, got {frame_bgr.shape} {frame_bgr.dtype}"
            )
        h, w = frame_bgr.shape[:2]
        nbytes = frame_bgr.nbytes
        if nbytes > self._frame_bytes:  # grow once per larger frame size
            self.cuda.stream_sync(self.stream)
            if self._frame_ptr:
                self.cuda.device_free(self._frame_ptr)
            self._frame_ptr, self._frame_bytes = self.cuda.device_alloc(nbytes), nbytes
            self._pinned = self.cuda.pinned_empty((nbytes,), np.dtype(np.uint8))
        assert self._pinned is not None
        host = self._pinned[:nbytes].reshape(h, w, 3)
        np.copyto(host, frame_bgr)
        self.cuda.htod_async(self._frame_ptr, host, self.stream)
        (geometry,) = self.kernel([DeviceFrame(self._frame_ptr, w, h, w * 3)], self.out, self.stream)
        return DevicePointer(self.out, self.out_shape), geometry


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
