"""The device-resident KV cache (runtime/device_decoding.py) against the host decoder.

TensorRT cannot run here, so on a GPU (marked `gpu`) the step graph is stood in for by the real
`dec_step` ONNX graph on ONNX Runtime, behind device buffers: it reads its inputs from GPU memory
and writes its outputs to GPU memory, as a TensorRT engine does. The decoder's own traffic is
counted: cross K/V go up once per caption, each step moves nothing but the token, position and
logits, and the captions equal the host decoder's token for token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from h2a.runtime.backends import DevicePointer

from .test_cuda_preprocess import HAS_GPU, _frames

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and CuPy (run on a lent GPU machine)"),
]


class CountingCuda:
    """cuda-python with the decoder's host<->device traffic counted, and every allocation filled
    with NaN first: what fresh device memory may hold (the decoder must clear its cache itself;
    a GPU run once decoded garbage from memory an earlier test had left behind)."""

    def __init__(self, cuda: Any) -> None:
        self.inner = cuda
        self.uploads = 0
        self.downloads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def device_alloc(self, nbytes: int) -> int:
        ptr = self.inner.device_alloc(nbytes)
        nan = self.inner.pinned_empty((max(1, nbytes // 4),), np.dtype(np.float32))
        nan[:] = np.nan
        stream = self.inner.stream_create()
        self.inner.htod_async(ptr, nan, stream)
        self.inner.stream_sync(stream)
        self.inner.pinned_free(nan)
        return int(ptr)

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.uploads += 1
        self.inner.htod_async(dst, src, stream)

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.downloads += 1
        self.inner.dtoh_async(dst, src, stream)


class OnnxOnDevice:
    """dec_step on ONNX Runtime with every K/V input and output in GPU memory."""

    def __init__(self, graph: Any, cuda: Any) -> None:
        self.graph, self.raw = graph, cuda
        self.cuda: Any = CountingCuda(cuda)
        self.stream = cuda.stream_create()
        self.outputs: dict[str, int] = {}
        self.steps = 0

    @property
    def input_names(self) -> list[str]:
        return self.graph.input_names

    @property
    def output_names(self) -> list[str]:
        return self.graph.output_names

    def run_device(
        self, inputs: dict[str, Any], host_outputs: set[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, DevicePointer]]:
        self.raw.stream_sync(self.stream)  # what the decoder enqueued (uploads, cache writes) is done
        feed = {}
        for name, value in inputs.items():
            if isinstance(value, DevicePointer):
                host = np.empty(value.shape, np.float32)
                self.raw.dtoh_async(host, value.ptr, self.stream)
                self.raw.stream_sync(self.stream)
                feed[name] = host
            else:
                feed[name] = np.array(value)
        out = self.graph.run(feed)
        device = {}
        for name, array in out.items():
            if name not in self.outputs:
                self.outputs[name] = self.raw.device_alloc(array.nbytes)
            self.raw.htod_async(self.outputs[name], np.ascontiguousarray(array), self.stream)
            device[name] = DevicePointer(self.outputs[name], array.shape)
        self.raw.stream_sync(self.stream)
        self.steps += 1
        return {n: out[n] for n in host_outputs}, device


def test_device_cache_decodes_what_the_host_cache_decodes(tiny_bundle: Path) -> None:
    from h2a.runtime.backends.cuda_memory import CudaPython
    from h2a.runtime.bundle import load_bundle
    from h2a.runtime.device_decoding import DeviceGreedyDecoder
    from h2a.runtime.engine import Engine

    engine = Engine(load_bundle(tiny_bundle))
    cuda = CudaPython()
    step = OnnxOnDevice(engine.decoder.step, cuda)
    device = DeviceGreedyDecoder(cast(Any, step), engine.manifest.decoder)  # has what the decoder calls
    for frame in _frames()[:4]:
        detection = engine.detect(frame)
        enc = engine.encode_caption(detection)
        host = engine.decoder.decode(
            enc["cross_k"], enc["cross_v"], enc["memory_bias"], max_new_tokens=12, stop_at_eos=False
        )
        before = (step.cuda.uploads, step.cuda.downloads, step.steps)
        ours = device.decode(
            enc["cross_k"], enc["cross_v"], enc["memory_bias"], max_new_tokens=12, stop_at_eos=False
        )
        uploads, downloads, steps = (
            a - b for a, b in zip((step.cuda.uploads, step.cuda.downloads, step.steps), before, strict=True)
        )
        assert ours.tokens == host.tokens and steps == ours.steps == 12
        layers = engine.manifest.decoder.layers
        assert uploads == 2 * layers + 1  # cross K/V per layer and the memory bias, once per caption
        assert downloads == 0  # logits come back inside run_device; the cache never leaves the GPU
    device.close()
