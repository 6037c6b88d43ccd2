"""The dependency rule (README, "Repository layout"): the runtime and the edge application never
import torch, onnx or scipy."""

from __future__ import annotations

import subprocess
import sys

#: Backends whose own dependency is absent here may fail to import, and only for that reason.
OPTIONAL = {"tensorrt", "pycuda", "cuda"}

PROBE = """
import importlib, pkgutil, sys
import h2a.runtime, h2a.edge
loaded = []
for package in (h2a.runtime, h2a.edge):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as err:
            if err.name.split(".")[0] not in %r:
                raise
        loaded.append(info.name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "onnx", "scipy"})
print(len(loaded))
print(",".join(heavy))
"""


def test_runtime_and_edge_import_without_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE % OPTIONAL], capture_output=True, text=True, check=True
    )
    count, heavy = result.stdout.splitlines()
    assert int(count) >= 20  # every module under both packages was imported
    assert heavy == "", f"runtime/edge pulled in {heavy}"


CALIBRATION_PROBE = """
import importlib, pkgutil, sys
import h2a.calibration
for info in pkgutil.walk_packages(h2a.calibration.__path__, "h2a.calibration."):
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as err:
        if err.name.split(".")[0] not in %r:
            raise
importlib.import_module("h2a.calibration.cli")
bad = [m for m in sys.modules if m.split(".")[0] in {"torch", "scipy"} or m.startswith("h2a.edge")]
print(",".join(sorted(bad)))
"""


def test_calibration_imports_neither_torch_nor_the_edge_app() -> None:
    """INT8 tools run on the device too (collect on site): no torch, and no upward import of edge."""
    result = subprocess.run(
        [sys.executable, "-c", CALIBRATION_PROBE % OPTIONAL], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
