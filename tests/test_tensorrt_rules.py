"""The TensorRT path's rules that need no TensorRT: engine compatibility (exact build, GPU family),
network flags per version, where DLA applies, and that the builder module gates what older
TensorRT lacks. (The Q/DQ graph rules are in test_calibration.py, the calibration cache key there.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from h2a.export_tools.export.tensorrt_options import (
    BuildOptions,
    check_dla,
    dla_core_for,
    explicit_batch_flags,
    version_tuple,
)
from h2a.runtime.backends.engine_compat import check_engine_compat
from h2a.runtime.errors import BackendError

ROOT = Path(__file__).resolve().parents[1]


def test_engines_run_only_on_the_exact_tensorrt_build_and_gpu_family() -> None:
    built = {"version": "10.3.0.30", "compute_capability": [8, 7]}
    check_engine_compat(built, "10.3.0.30", (8, 7))
    with pytest.raises(
        BackendError, match=re.escape("built with TensorRT 10.3.0.30, this device has 10.3.0.26")
    ):
        check_engine_compat(built, "10.3.0.26", (8, 7))  # same major.minor, another build
    with pytest.raises(BackendError, match=re.escape("compute capability 8.7, this GPU is 8.6")):
        check_engine_compat(built, "10.3.0.30", (8, 6))
    with pytest.raises(BackendError, match="does not record"):
        check_engine_compat({}, "10.3.0.30", (8, 7))


def test_network_flags_and_versions() -> None:
    assert version_tuple("8.6.2.3") == (8, 6, 2, 3) and version_tuple("10.3.0.post1") == (10, 3, 0)
    assert explicit_batch_flags("8.6.2.3", 0) == 1  # TensorRT 8: the ONNX parser needs explicit batch
    assert explicit_batch_flags("10.3.0.30", 0) == 0  # 10: the only mode; the flag is deprecated
    with pytest.raises(BackendError):
        version_tuple("unknown")


def test_dla_is_for_hoi_only_and_never_fp32() -> None:
    options = BuildOptions(dla_core=0)
    assert dla_core_for("hoi", options) == 0
    assert dla_core_for("cap_encoder", options) is None and dla_core_for("dec_step", options) is None
    check_dla("hoi", options, int8=False)  # FP16
    check_dla("hoi", BuildOptions(dla_core=0, fp16=False), int8=True)
    with pytest.raises(BackendError, match="--dla-core needs FP16 or INT8"):
        check_dla("hoi", BuildOptions(dla_core=0, fp16=False), int8=False)
    check_dla("dec_step", BuildOptions(dla_core=0, fp16=False), int8=False)  # not on the DLA anyway


def test_the_builder_gates_what_tensorrt_8_lacks() -> None:
    """Read the source: the progress monitor class is defined only where TensorRT has the base
    class, and create_network gets the explicit-batch flag from the version rule."""
    source = (ROOT / "export_tools" / "export" / "tensorrt_build.py").read_text()
    assert 'HAS_PROGRESS_MONITOR = hasattr(trt, "IProgressMonitor")' in source
    header, _, rest = source.partition("if HAS_PROGRESS_MONITOR:\n")
    assert "class _Progress(trt.IProgressMonitor)" not in header
    assert rest.splitlines()[1].startswith("    class _Progress(trt.IProgressMonitor)")
    assert "create_network(0)" not in source and "create_network(flags)" in source
