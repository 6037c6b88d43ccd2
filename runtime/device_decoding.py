"""Greedy decoding with the KV cache on the GPU (the TensorRT path).

`GreedyDecoder` keeps the cache in host memory, which suits ONNX Runtime on a CPU; on a GPU it
would copy every layer's cache and the cross K/V up to the device each token (about 4.4 MB a token
on the base preset) and the new K/V back. Here the self-attention cache, the cross K/V and the
memory bias live in device buffers: cross K/V and the bias go up once per caption, each step sends
only the token and its position and brings back only the logits, and the step's new K/V are written
into the cache at `position` device to device, in one strided copy for K and one for V, on the
step graph's own stream (so they are ordered before the next step without a synchronisation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from h2a.runtime.backends import DeviceGraphRunner, DevicePointer
from h2a.runtime.decoding import GreedyDecoder
from h2a.runtime.manifest import DecoderConstants

FLOAT_BYTES = 4  # the step graph's K/V and bias inputs are float32 (TensorRT keeps float I/O)


class DeviceGreedyDecoder(GreedyDecoder):
    def __init__(self, step: DeviceGraphRunner, consts: DecoderConstants) -> None:
        super().__init__(step, consts)  # the base class keeps its host buffers, unused here
        self.device_step = step
        self.cuda = step.cuda
        c = consts
        self.layer_shape = (1, c.heads, c.max_len, c.head_dim)  # one layer's cache, as the graph reads it
        self.layer_bytes = int(np.prod(self.layer_shape)) * FLOAT_BYTES
        self.self_k = self.cuda.device_alloc(c.layers * self.layer_bytes)  # (L, 1, H, P, dh)
        self.self_v = self.cuda.device_alloc(c.layers * self.layer_bytes)
        # Zeroed once: rows past `position` are masked, but a mask cannot hide NaN bit patterns
        # that fresh device memory may hold (softmax weight 0 times NaN is NaN). Seen on a GPU.
        for cache in (self.self_k, self.self_v):
            self.cuda.zero_async(cache, c.layers * self.layer_bytes, step.stream)
        self._cross: dict[str, tuple[int, int]] = {}  # input name -> (device pointer, capacity)
        self._cross_host: dict[str, np.ndarray] = {}  # pinned staging for the per-caption upload

    def close(self) -> None:
        self.cuda.stream_sync(self.device_step.stream)
        for ptr in (self.self_k, self.self_v, *(p for p, _ in self._cross.values())):
            self.cuda.device_free(ptr)
        for host in self._cross_host.values():
            self.cuda.pinned_free(host)
        self._cross.clear()
        self._cross_host.clear()

    def _upload(self, name: str, array: np.ndarray) -> DevicePointer:
        array = np.ascontiguousarray(array, dtype=np.float32)
        ptr, capacity = self._cross.get(name, (0, 0))
        if array.nbytes > capacity:  # grows once (a longer memory); steady state allocates nothing
            self.cuda.stream_sync(self.device_step.stream)
            if ptr:
                self.cuda.device_free(ptr)
                self.cuda.pinned_free(self._cross_host[name])
            ptr = self.cuda.device_alloc(array.nbytes)
            self._cross[name] = (ptr, array.nbytes)
            self._cross_host[name] = self.cuda.pinned_empty((array.size,), np.dtype(np.float32))
        host = self._cross_host[name][: array.size].reshape(array.shape)
        host[...] = array
        self.cuda.htod_async(ptr, host, self.device_step.stream)
        return DevicePointer(ptr, array.shape)

    def _begin(self, cross_k: np.ndarray, cross_v: np.ndarray, memory_bias: np.ndarray) -> dict[str, Any]:
        """Cross K/V and bias to the device, once per caption."""
        cross: dict[str, Any] = {"memory_bias": self._upload("memory_bias", memory_bias)}
        for i in range(self.consts.layers):
            cross[f"cross_k_{i}"] = self._upload(f"cross_k_{i}", cross_k[i])  # (1, H, M, dh)
            cross[f"cross_v_{i}"] = self._upload(f"cross_v_{i}", cross_v[i])
        return cross

    def _run_step(self, token: int, position: int, cross: dict[str, Any]) -> np.ndarray:
        c = self.consts
        self._token[0, 0] = token
        self._position[0] = position
        inputs: dict[str, Any] = {"token": self._token, "position": self._position, **cross}
        for i in range(c.layers):
            inputs[f"self_k_{i}"] = DevicePointer(self.self_k + i * self.layer_bytes, self.layer_shape)
            inputs[f"self_v_{i}"] = DevicePointer(self.self_v + i * self.layer_bytes, self.layer_shape)
        host, device = self.device_step.run_device(inputs, {"logits"})
        # new_k: (L, 1, H, 1, dh) -> cache (L, 1, H, P, dh) at `position`: L*H rows of dh floats
        row = c.head_dim * FLOAT_BYTES
        for cache, new in ((self.self_k, device["new_k"]), (self.self_v, device["new_v"])):
            self.cuda.dtod_2d_async(
                cache + position * row, c.max_len * row, new.ptr, row, row, c.layers * c.heads,
                self.device_step.stream,
            )  # fmt: skip
        return host["logits"][0]  # (V,)
