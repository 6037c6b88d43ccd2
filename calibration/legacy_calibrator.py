"""Implicit INT8 calibration for TensorRT < 10.1 (JetPack 5): an entropy calibrator with a cache.

TensorRT 10.1 deprecated implicit calibration in favour of Q/DQ graphs (`qdq.py`), but JetPack 5
devices ship TensorRT 8.5, where `IInt8EntropyCalibrator2` is the way. It is fed from the same
`calib.npz` as the Q/DQ path. Its cache file holds the per-tensor scales TensorRT computed: it is
written once and, on later builds, returned to TensorRT so no frames are needed again. The cache
name records the TensorRT version and the GPU's compute capability, because scales computed by
one TensorRT on one GPU family are not valid for another.

The batching and cache logic (`CalibrationFeeder`, `CalibrationCache`) is plain Python and
tested here; `entropy_calibrator` wraps it in TensorRT's class and only runs where TensorRT is.
Only the `hoi` graph is calibrated this way; the caption graphs build in FP16 on JetPack 5.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from h2a.calibration.calib_set import CalibrationSet
from h2a.runtime.backends.cuda_memory import Cuda

#: Hex digits of each hash in a cache file's name.
KEY_DIGITS = 16


@dataclass(frozen=True)
class CacheKey:
    """What the scales in a cache depend on: the graph itself (a retrained model must not reuse old
    scales), the frames they were computed on, the exact TensorRT build and the GPU family."""

    graph: str
    graph_sha256: str  # the ONNX member's sha256, from the bundle manifest
    calib_sha256: str  # the calibration set's hash (calib.npz)
    trt_version: str
    compute_capability: tuple[int, int]


def cache_name(key: CacheKey) -> str:
    major, minor = key.compute_capability
    return (
        f"{key.graph}.{key.graph_sha256[:KEY_DIGITS]}.{key.calib_sha256[:KEY_DIGITS]}"
        f".trt{key.trt_version}.sm{major}{minor}.calib"
    )


class CalibrationCache:
    """One cache file, read back verbatim and written atomically (a crash mid-write leaves the
    old cache or none, never half of one)."""

    def __init__(self, folder: Path, key: CacheKey) -> None:
        self.path = folder / cache_name(key)

    def read(self) -> bytes | None:
        return self.path.read_bytes() if self.path.is_file() else None

    def write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)


class CalibrationFeeder:
    """Batches of normalised frames for the `images` input, in a fixed order."""

    def __init__(self, calib: CalibrationSet, mean: list[float], std: list[float], batch_size: int) -> None:
        self.calib, self.mean, self.std, self.batch_size = calib, mean, std, batch_size
        self._batches: Iterator[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.calib) // self.batch_size  # a ragged last batch is dropped

    def batches(self) -> Iterator[np.ndarray]:
        images = self.calib.images(self.mean, self.std)
        for _ in range(len(self)):
            yield np.concatenate([next(images) for _ in range(self.batch_size)])  # (B, 3, S, S)

    def next_batch(self) -> np.ndarray | None:
        if self._batches is None:
            self._batches = self.batches()
        return next(self._batches, None)


def entropy_calibrator(feeder: CalibrationFeeder, cache: CalibrationCache, cuda: Cuda) -> Any:
    """A `trt.IInt8EntropyCalibrator2` over `feeder` that reads and writes `cache`.

    Returned as Any so that callers without TensorRT type-check; the class itself is checked
    against tensorrt-stubs.
    """
    import tensorrt as trt

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            side = feeder.calib.input_size
            self.host = cuda.pinned_empty((feeder.batch_size, 3, side, side), np.dtype(np.float32))
            self.device = cuda.device_alloc(self.host.nbytes)
            self.stream = cuda.stream_create()

        def get_batch_size(self) -> int:
            return feeder.batch_size

        def get_batch(self, names: list[str]) -> list[int]:
            batch = feeder.next_batch()
            if batch is None:
                return []  # TensorRT's signal that calibration data is exhausted
            self.host[...] = batch
            cuda.htod_async(self.device, self.host, self.stream)
            cuda.stream_sync(self.stream)
            return [self.device for _ in names]

        def read_calibration_cache(self) -> Any:
            return cache.read()  # None: no cache yet, TensorRT calibrates from the frames

        def write_calibration_cache(self, data: Any) -> None:
            cache.write(bytes(data))

    return EntropyCalibrator()
