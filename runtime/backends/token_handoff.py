"""Image tokens handed from `hoi` to `cap_encoder` on the GPU, device to device.

`hoi` leaves a frame's image tokens (1, T, D) in the output buffer of that frame's slot, which the
run two frames later overwrites; the caption of the frame runs later, on the caption worker's
thread and on `cap_encoder`'s stream. When the pipeline decides that a frame will be captioned,
`TokenPool.keep` copies its tokens into a slot of the pool, on `hoi`'s stream (so after `hoi`
wrote them), and records an event there; `cap_encoder`'s stream waits on that event before it reads
them (`DeviceTokens.ready`). Nothing crosses to the host and the detection thread never waits.

A slot goes back to the pool when its `DeviceTokens` is garbage: the caption is done (its run has
synchronised `cap_encoder`'s stream, so nothing still reads the slot) or the job was dropped. With
every slot taken (a caption backlog longer than the pool), the tokens are downloaded to host memory
instead: slower, never wrong.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

from h2a.runtime.backends import DevicePointer
from h2a.runtime.backends.cuda_memory import Cuda

#: Kept image tokens at once: the caption queue's peak limit (edge/queues.py: 4), the job being
#: captioned, and one being handed on. Each slot is T * D floats (400 KB on the base preset).
POOL_SLOTS = 6
FLOAT_BYTES = 4


@dataclass(eq=False)
class DeviceTokens:
    """Image tokens in device memory. `ready`: an event to wait on before reading them (0: they
    are complete already). `sequence`: which `hoi` submission wrote them where they still sit in
    its output buffer (valid until that slot's next run), or -1 for tokens kept in a pool slot."""

    pointer: DevicePointer
    ready: int = 0
    sequence: int = -1


class TokenPool:
    def __init__(self, cuda: Cuda, slots: int = POOL_SLOTS) -> None:
        self.cuda = cuda
        self._lock = threading.Lock()
        self._free = list(range(slots))
        self._ptr = [0] * slots
        self._capacity = [0] * slots
        self._copied = [cuda.event_create() for _ in range(slots)]
        self._fallback = cuda.event_create()
        self.kept = 0
        self.downloaded = 0  # hand-offs that found the pool full (counted for tests and logs)

    def keep(self, tokens: DevicePointer, stream: int) -> DeviceTokens | np.ndarray:
        """Copy `tokens` (written by work queued on `stream`) into a free slot, queued on `stream`;
        -> the slot's tokens, or a host array when every slot is taken."""
        nbytes = int(np.prod(tokens.shape)) * FLOAT_BYTES
        with self._lock:
            slot = self._free.pop() if self._free else None
        if slot is None:
            return self._download(tokens, stream)
        cuda = self.cuda
        if nbytes > self._capacity[slot]:  # a free slot is read by nothing: safe to replace
            if self._ptr[slot]:
                cuda.device_free(self._ptr[slot])
            self._ptr[slot], self._capacity[slot] = cuda.device_alloc(nbytes), nbytes
        cuda.dtod_async(self._ptr[slot], tokens.ptr, nbytes, stream)
        cuda.event_record(self._copied[slot], stream)
        kept = DeviceTokens(DevicePointer(self._ptr[slot], tokens.shape), ready=self._copied[slot])
        weakref.finalize(kept, self._release, slot)
        self.kept += 1
        return kept

    def _release(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)

    def _download(self, tokens: DevicePointer, stream: int) -> np.ndarray:
        staging = self.cuda.pinned_empty(tokens.shape, np.dtype(np.float32))
        self.cuda.dtoh_async(staging, tokens.ptr, stream)
        self.cuda.event_record(self._fallback, stream)
        self.cuda.event_sync(self._fallback)
        host = staging.copy()
        self.cuda.pinned_free(staging)
        self.downloaded += 1
        return host

    def free_slots(self) -> int:
        with self._lock:
            return len(self._free)

    def close(self) -> None:
        """Free the slots; call once no caption runs any more."""
        for ptr in self._ptr:
            if ptr:
                self.cuda.device_free(ptr)
        for event in (*self._copied, self._fallback):
            self.cuda.event_destroy(event)
        self._ptr = [0] * len(self._ptr)
