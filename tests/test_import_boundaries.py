"""DESIGN.md's dependency rule: the runtime and the edge application never import torch."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import h2a.runtime, h2a.edge
loaded = []
for package in (h2a.runtime, h2a.edge):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        loaded.append(info.name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "onnx", "scipy"})
print(len(loaded))
print(",".join(heavy))
"""


def test_runtime_and_edge_import_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    count, heavy = result.stdout.splitlines()
    assert int(count) >= 8  # every module under both packages was imported
    assert heavy == "", f"runtime/edge pulled in {heavy}"
