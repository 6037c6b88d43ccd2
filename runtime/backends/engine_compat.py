"""Whether a bundle's TensorRT engines can run here: plain Python, so it is tested without TensorRT.

A serialized engine is tied to the exact TensorRT build that made it (NVIDIA: "engines are not
portable across TensorRT versions"; even a patch release refuses to deserialize, or worse, runs
with other tactics) and to the GPU's compute capability.
"""

from __future__ import annotations

from typing import Any

from h2a.runtime.errors import BackendError


def check_engine_compat(built: dict[str, Any], here_version: str, here_cc: tuple[int, int]) -> None:
    """`built`: the bundle's provenance["tensorrt"]. Refuses, in one line, what cannot run here."""
    version = str(built.get("version", ""))
    if not version:
        raise BackendError("the bundle does not record which TensorRT built its engines; rebuild it")
    if version != here_version:
        raise BackendError(
            f"bundle engines were built with TensorRT {version}, this device has {here_version}; "
            "rebuild them here with edge-export --backend tensorrt"
        )
    cc = tuple(built.get("compute_capability", ()))
    if cc and cc != tuple(here_cc):
        raise BackendError(
            f"bundle engines were built for GPU compute capability {cc[0]}.{cc[1]}, this GPU is "
            f"{here_cc[0]}.{here_cc[1]}; rebuild them on this device"
        )
