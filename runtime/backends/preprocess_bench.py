"""Pre-processing on the GPU vs on the CPU, measured in one run (needs a CUDA GPU and cuda-python).

    python -m h2a.runtime.backends.preprocess_bench [--frames 200] [--size 640] [--width 1920 --height 1080]

Both paths end with the network input (1, 3, S, S) float32 in device memory, as TensorRT wants it:
- OpenCV: `Preprocessor` on the CPU, then the float tensor copied up (pinned buffer, one stream);
- CUDA: the uint8 frame copied into one of two pinned buffers, uploaded and letterboxed by the
  library's kernel on one of two streams, so frame n+1's upload overlaps frame n's kernel.
Also reported: the kernel alone, timed with CUDA events.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from h2a.runtime.backends.cuda_memory import CudaPython
from h2a.runtime.backends.cuda_preprocess import CudaPreprocessor, DeviceFrame
from h2a.runtime.cli import run_main
from h2a.runtime.preprocess import Preprocessor

BUFFERS = 2  # double buffering: two pinned frames, two streams


def _frames(count: int, width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return [np.roll(base, 7 * i, axis=1) for i in range(min(count, 8))]


class Events:
    def __init__(self, rt: Any) -> None:
        self.rt = rt

    def make(self) -> Any:
        err, event = self.rt.cudaEventCreate()
        assert int(err) == 0
        return event

    def ms(self, start: Any, end: Any) -> float:
        self.rt.cudaEventSynchronize(end)
        err, ms = self.rt.cudaEventElapsedTime(start, end)
        assert int(err) == 0
        return float(ms)


def bench(count: int, size: int, width: int, height: int) -> None:
    cuda = CudaPython()
    rt = cuda.rt
    frames = _frames(count, width, height)
    out_bytes = 3 * size * size * 4
    dst = cuda.device_alloc(out_bytes)

    # OpenCV on the CPU + upload of the float tensor
    cpu = Preprocessor(size)
    pinned_out = cuda.pinned_empty((1, 3, size, size), np.dtype(np.float32))
    stream = cuda.stream_create()
    for i in range(3):
        tensor, _ = cpu(frames[i % len(frames)])
    t0 = time.perf_counter()
    for i in range(count):
        tensor, _ = cpu(frames[i % len(frames)])
        cuda.stream_sync(stream)  # the previous upload is done with the pinned buffer
        pinned_out[...] = tensor
        cuda.htod_async(dst, pinned_out, stream)
    cuda.stream_sync(stream)
    opencv_ms = (time.perf_counter() - t0) * 1000 / count

    # CUDA: pinned uint8 frames, two streams, upload overlapping the other stream's kernel
    gpu = CudaPreprocessor(size)
    nbytes = width * height * 3
    pinned = [cuda.pinned_empty((height, width, 3), np.dtype(np.uint8)) for _ in range(BUFFERS)]
    device = [cuda.device_alloc(nbytes) for _ in range(BUFFERS)]
    outs = [cuda.device_alloc(out_bytes) for _ in range(BUFFERS)]
    streams = [cuda.stream_create() for _ in range(BUFFERS)]

    def one(i: int) -> None:
        k = i % BUFFERS
        cuda.stream_sync(streams[k])  # this slot's previous frame is finished
        np.copyto(pinned[k], frames[i % len(frames)])  # the camera's frame into pinned memory
        cuda.htod_async(device[k], pinned[k], streams[k])
        gpu([DeviceFrame(device[k], width, height, width * 3)], outs[k], streams[k])

    for i in range(4):
        one(i)
    for s in streams:
        cuda.stream_sync(s)
    t0 = time.perf_counter()
    for i in range(count):
        one(i)
    for s in streams:
        cuda.stream_sync(s)
    cuda_ms = (time.perf_counter() - t0) * 1000 / count

    # the kernel alone, CUDA events around a burst of launches on one stream
    events = Events(rt)
    start, end = events.make(), events.make()
    frame = DeviceFrame(device[0], width, height, width * 3)
    rt.cudaEventRecord(start, streams[0])
    for _ in range(count):
        gpu([frame], outs[0], streams[0])
    rt.cudaEventRecord(end, streams[0])
    kernel_ms = events.ms(start, end) / count
    # upload alone
    rt.cudaEventRecord(start, streams[0])
    for _ in range(count):
        cuda.htod_async(device[0], pinned[0], streams[0])
    rt.cudaEventRecord(end, streams[0])
    upload_ms = events.ms(start, end) / count

    props = cuda._check(rt.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    print(f"{name}; {width}x{height} BGR -> (1, 3, {size}, {size}) float32 on the GPU, {count} frames")
    print(f"{'path':<58} {'ms/frame':>9}")
    print(f"{'OpenCV on the CPU + upload of the float tensor':<58} {opencv_ms:>9.3f}")
    print(f"{'CUDA: pinned uint8 upload + kernel, 2 streams, overlapped':<58} {cuda_ms:>9.3f}")
    print(f"{'  the kernel alone (CUDA events)':<58} {kernel_ms:>9.3f}")
    print(f"{'  the uint8 upload alone (CUDA events)':<58} {upload_ms:>9.3f}")
    print(f"speed-up of the CUDA path: {opencv_ms / cuda_ms:.1f}x")
    for ptr in [dst, *device, *outs]:
        cuda.device_free(ptr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m h2a.runtime.backends.preprocess_bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    args = p.parse_args(argv)
    return run_main("preprocess_bench", lambda: bench(args.frames, args.size, args.width, args.height))


if __name__ == "__main__":
    sys.exit(main())
