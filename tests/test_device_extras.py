"""Device commands run with the device's extras alone.

Each command runs in a fresh process in which every third-party module that the extra does not
install is blocked at import (as if it were absent), so a stray `import torch` or `import onnx` on
a device path fails here the way it would on a Jetson. The extras are read from pyproject.toml,
so a dependency added to an extra is allowed here, and one removed is blocked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
#: Import names of the distributions the extras name; an extra naming an unknown one fails here.
IMPORT_NAMES = {
    "onnxruntime": "onnxruntime",
    "opencv-python-headless": "cv2",
    "tokenizers": "tokenizers",
    "numpy": "numpy",
    "tqdm": "tqdm",
    "tensorrt": "tensorrt",
    "pycuda": "pycuda",
    "cuda-python": "cuda",
    "torch": "torch",
    "onnx": "onnx",
    "scipy": "scipy",
    "scikit-learn": "sklearn",
    "tomli": "tomli",
    "tomlkit": "tomlkit",
    "paho-mqtt": "paho",
    "matplotlib": "matplotlib",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "jinja2": "jinja2",
    "selenium": "selenium",
}
#: What JetPack itself provides beside the [jetson] extra (its OpenCV has GStreamer).
SYSTEM_PACKAGES = {"jetson": {"cv2"}}

BLOCKING_RUNNER = """
import importlib.abc, runpy, sys
blocked = set(sys.argv[1].split(","))

class Absent(importlib.abc.MetaPathFinder):
    # Stands in for every finder and finds nothing of a blocked package: `import` fails and
    # `importlib.util.find_spec` answers None, as where the package is not installed.

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self):
        for finder in self.finders:
            if hasattr(finder, "invalidate_caches"):
                finder.invalidate_caches()

sys.meta_path[:] = [Absent(list(sys.meta_path))]
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _requirement_name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement


def installed_by(extra: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [_requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"][extra]]
    unknown = [n for n in names if n not in IMPORT_NAMES]
    assert not unknown, f"add the import names of {unknown} to IMPORT_NAMES"
    return {IMPORT_NAMES[n] for n in names} | SYSTEM_PACKAGES.get(extra, set())


def run_with(extra: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    blocked = sorted(set(IMPORT_NAMES.values()) - installed_by(extra))
    return subprocess.run(
        [sys.executable, "-c", BLOCKING_RUNNER, ",".join(blocked), module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


DEVICE_COMMANDS = {
    "cpu": [
        "h2a.edge.run_cli",
        "h2a.edge.alerts_cli",
        "h2a.edge.bench",
        "h2a.calibration.cli",
        "h2a.edge.tune_cli",
    ],
    "jetson": [
        "h2a.edge.run_cli",
        "h2a.edge.alerts_cli",
        "h2a.calibration.cli",
        "h2a.export_tools.export.cli",
    ],
}


@pytest.mark.parametrize(("extra", "module"), [(e, m) for e, ms in DEVICE_COMMANDS.items() for m in ms])
def test_help_works_with_the_extra_alone(extra: str, module: str) -> None:
    result = run_with(extra, module, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.fixture(scope="module")
def clip_and_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(3)
    video = folder / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (96, 72))
    images = folder / "images"
    images.mkdir()
    for i in range(12):
        frame = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
        writer.write(frame)
        cv2.imwrite(str(images / f"{i:02d}.jpg"), frame)
    writer.release()
    return video, images


FORCE_ONE_ALERT = "[defaults]\nenter = 1.0\nexit = 0.0\nmin_duration = 0.0\n[anomaly.riot]\nenter = 0.0\n"


def test_the_cpu_extra_runs_the_device_commands(
    tiny_bundle: Path, tmp_path: Path, clip_and_images: tuple[Path, Path]
) -> None:
    video, images = clip_and_images
    config = tmp_path / "edge.toml"
    config.write_text(FORCE_ONE_ALERT)
    alerts = tmp_path / "alerts"
    run = run_with(
        "cpu", "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video),
        "--alerts", str(alerts), "--config", str(config),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "event=alert_written" in run.stderr
    listed = run_with("cpu", "h2a.edge.alerts_cli", "--alerts", str(alerts), "list")
    assert listed.returncode == 0 and "1 alerts" in listed.stdout, listed.stderr
    # the review page's whole import chain loads before it looks for the store
    serve = run_with("cpu", "h2a.edge.alerts_cli", "--alerts", str(tmp_path / "none"), "serve", "--port", "0")
    assert serve.returncode == 2 and "no alert store in" in serve.stderr, serve.stderr
    calib = tmp_path / "calib.npz"
    collect = run_with(
        "cpu", "h2a.calibration.cli", "collect", "--images", str(images), "--frames", "6",
        "--engine", str(tiny_bundle), "--out", str(calib), "--quiet",
    )  # fmt: skip
    assert collect.returncode == 0 and calib.is_file(), collect.stderr
    bench = run_with(
        "cpu", "h2a.edge.bench", "--engine", str(tiny_bundle), "--frames", "8", "--repeats", "1",
        "--spin", "off",
    )  # fmt: skip
    assert bench.returncode == 0 and "KV cache vs recompute" in bench.stdout, bench.stderr
    # a desktop step says in one line which extra it needs
    quantize = run_with(
        "cpu", "h2a.calibration.cli", "quantize", "--engine", str(tiny_bundle), "--calib", str(calib),
        "--target", "cpu", "--out", str(tmp_path / "int8.plan"),
    )  # fmt: skip
    assert quantize.returncode == 2, quantize.stderr
    assert quantize.stderr.strip().splitlines() == [
        "edge-calibrate: error: edge-calibrate quantize needs onnx, which is not installed here "
        "(pip install 'hoi2anomaly-edge[export]')"
    ]


def test_the_jetson_extra_reaches_tensorrt_without_torch_or_onnx(
    tiny_bundle: Path, tmp_path: Path, clip_and_images: tuple[Path, Path]
) -> None:
    """No TensorRT here: the engine build goes as far as importing it, and says so in one line."""
    _, images = clip_and_images
    build = run_with(
        "jetson", "h2a.export_tools.export.cli", "--backend", "tensorrt", "--onnx-bundle", str(tiny_bundle),
        "--out", str(tmp_path / "trt.plan"),
    )  # fmt: skip
    assert build.returncode == 2, build.stderr
    (line,) = build.stderr.strip().splitlines()
    assert line.startswith("edge-export: error: TensorRT is not installed here")
    inspect = run_with("jetson", "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--inspect")
    assert inspect.returncode == 0, inspect.stderr
    collect = run_with(
        "jetson", "h2a.calibration.cli", "collect", "--images", str(images), "--frames", "6",
        "--engine", str(tiny_bundle), "--out", str(tmp_path / "calib.npz"), "--quiet",
    )  # fmt: skip
    assert collect.returncode == 0, collect.stderr
