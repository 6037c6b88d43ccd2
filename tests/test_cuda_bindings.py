"""Every call the cuda-python layer makes is one NVIDIA's binding accepts, checked without a GPU.

`cuda.bindings.runtime` converts and checks each argument before it reaches the driver: a wrong
type (an event where a stream goes, a Python float for a flag) raises TypeError at once, with or
without a GPU. Here, with no GPU or driver, every call that gets past the binding comes back
as a CUDA error code, which `CudaPython` must turn into a one-line BackendError; on a GPU machine
the same calls simply succeed. Either way, nothing else may be raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from h2a.runtime.backends.cuda_memory import CudaPython
from h2a.runtime.errors import BackendError

pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (pip install '.[dev]')")

PTR, STREAM, EVENT = 0x1000, 0, 0  # stand-ins: with no driver the call fails after the binding


def _calls(cuda: CudaPython) -> dict[str, Callable[[], Any]]:
    host = np.zeros((4, 4), np.float32)
    return {
        "device_alloc": lambda: cuda.device_alloc(64),
        "device_free": lambda: cuda.device_free(PTR),
        "pinned_empty": lambda: cuda.pinned_empty((4, 4), np.dtype(np.float32)),
        "stream_create": cuda.stream_create,
        "stream_sync": lambda: cuda.stream_sync(STREAM),
        "htod_async": lambda: cuda.htod_async(PTR, host, STREAM),
        "dtoh_async": lambda: cuda.dtoh_async(host, PTR, STREAM),
        "dtod_async": lambda: cuda.dtod_async(PTR, PTR + 64, 64, STREAM),
        "dtod_2d_async": lambda: cuda.dtod_2d_async(PTR, 256, PTR + 64, 64, 64, 4, STREAM),
        "zero_async": lambda: cuda.zero_async(PTR, 64, STREAM),
        "event_create": cuda.event_create,
        "event_record": lambda: cuda.event_record(EVENT, STREAM),
        "event_sync": lambda: cuda.event_sync(EVENT),
        "stream_wait_event": lambda: cuda.stream_wait_event(STREAM, EVENT),
        "event_destroy": lambda: cuda.event_destroy(EVENT),
        "compute_capability": cuda.compute_capability,
    }


def test_every_cuda_python_call_passes_the_bindings_argument_checks() -> None:
    from h2a.runtime.backends.cuda_memory import Cuda

    cuda = CudaPython()
    calls = _calls(cuda)
    protocol = {n for n in Cuda.__dict__ if not n.startswith("_")} - {"pinned_free"}  # frees nothing here
    assert protocol == set(calls)  # every method of the Cuda protocol is exercised
    for name, call in calls.items():
        try:
            call()  # on a GPU machine: runs
        except BackendError as err:  # here: the driver's error code, in one line
            assert str(err).startswith("CUDA call failed: cudaError"), name
            assert "\n" not in str(err)
