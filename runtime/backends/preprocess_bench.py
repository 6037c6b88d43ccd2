"""Pre-processing on the GPU vs on the CPU, measured in one run (needs a CUDA GPU and cuda-python).

    python -m h2a.runtime.backends.preprocess_bench [--frames 200] [--size 640] [--width 1920 --height 1080]
        [--busy-launches 8]

Both paths end with the network input (1, 3, S, S) float32 in device memory, as TensorRT wants it:
- OpenCV: `Preprocessor` on the CPU, then the float tensor copied up (pinned buffer, one stream);
- CUDA: the uint8 frame copied into one of two pinned buffers, uploaded and letterboxed by the
  library's kernel on one of two streams, so frame n+1's upload overlaps frame n's kernel.
Also reported: the kernel alone, timed with CUDA events; and the engine's own GPU frame input
(`GpuFrameInput`) in the engine's loop (submit frame t+1, then wait for frame t) with busy work
standing in for `hoi` (`--busy-launches` letterbox launches into a 2048 x 2048 scratch tensor),
its upload on a stream of its own (as the engine runs it) against the upload on `hoi`'s stream.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from h2a.runtime.backends.cuda_memory import CudaPython
from h2a.runtime.backends.cuda_preprocess import CudaPreprocessor, DeviceFrame
from h2a.runtime.backends.frame_input import GpuFrameInput
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


def bench(count: int, size: int, width: int, height: int, busy_launches: int) -> None:
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
    loop = engine_loop_ms(cuda, count, size, width, height, busy_launches)
    print(f"engine loop, GpuFrameInput + {busy_launches} stand-in launches per frame:")
    for mode, ms in loop.items():
        print(f"  {mode:<56} {ms:>9.3f}")
    serial, overlapped = loop.values()
    print(f"overlap gain of the upload stream: {serial / overlapped:.2f}x")
    for ptr in [dst, *device, *outs]:
        cuda.device_free(ptr)


#: Side of the stand-in inference's output: large enough that a launch takes a fraction of a ms.
BUSY_SIDE = 2048


def engine_loop_ms(
    cuda: CudaPython, count: int, size: int, width: int, height: int, busy_launches: int
) -> dict[str, float]:
    """ms per frame of the engine's frame input + a stand-in `hoi`, upload overlapped or not, timed
    with CUDA events on `hoi`'s stream from the first timed frame to the last."""
    frames = _frames(count, width, height)
    busy = CudaPreprocessor(BUSY_SIDE)
    busy_frame = DeviceFrame(cuda.device_alloc(width * height * 3), width, height, width * 3)
    scratch = cuda.device_alloc(3 * BUSY_SIDE * BUSY_SIDE * 4)
    events = Events(cuda.rt)
    start, end = events.make(), events.make()
    result = {}
    for mode in ("upload on hoi's stream", "upload on its own stream (the engine)"):
        stream = cuda.stream_create()
        frame_input = GpuFrameInput(cuda, stream, Preprocessor(size))
        if mode.startswith("upload on hoi"):
            frame_input.upload_stream = stream  # the copy queues behind the previous inference
        done = [cuda.event_create() for _ in range(BUFFERS)]
        for i in range(-4, count):  # 4 to warm up, then `count` timed
            if i == 0:
                cuda.stream_sync(stream)
                cuda.rt.cudaEventRecord(start, stream)
            frame_input(frames[i % len(frames)])
            for _ in range(busy_launches):
                busy([busy_frame], scratch, stream)
            cuda.event_record(done[i % BUFFERS], stream)
            cuda.event_sync(done[(i - 1) % BUFFERS])  # Engine.result of the frame before
        cuda.rt.cudaEventRecord(end, stream)
        result[mode] = events.ms(start, end) / count
        frame_input.close()
        for event in done:
            cuda.event_destroy(event)
    for ptr in (busy_frame.ptr, scratch):
        cuda.device_free(ptr)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m h2a.runtime.backends.preprocess_bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--busy-launches", type=int, default=8, help="stand-in inference per frame (launches)")
    args = p.parse_args(argv)
    return run_main(
        "preprocess_bench",
        lambda: bench(args.frames, args.size, args.width, args.height, args.busy_launches),
    )


if __name__ == "__main__":
    sys.exit(main())
