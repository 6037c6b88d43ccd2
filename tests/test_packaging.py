"""The built wheel holds every module of the four top-level folders under its `h2a.*` name.

pyproject.toml maps each folder to an import name (`runtime/` -> `h2a.runtime`) and lists every
subpackage by hand; a subpackage missing from that list installs without its modules, which an
editable install (what the tests use) never shows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "runtime": "h2a/runtime",
    "edge": "h2a/edge",
    "export_tools": "h2a/export_tools",
    "calibration": "h2a/calibration",
}
#: Not part of the source: virtual env, build output, caches.
SKIP = (".venv", "build", ".git", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")


def test_the_wheel_contains_every_module(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SKIP))  # no stale build/lib
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("hoi2anomaly_edge-*.whl")
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    expected = {
        f"{FOLDERS[path.relative_to(ROOT).parts[0]]}/{'/'.join(path.relative_to(ROOT).parts[1:])}"
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*.py")
    }
    assert sorted(expected - packed) == [], "add the missing subpackages to [tool.setuptools] packages"
    assert sorted(packed - expected) == []
    names = set(zipfile.ZipFile(wheel).namelist())
    page_files = [p.relative_to(ROOT / "edge") for p in (ROOT / "edge").glob("review_*/*.*")]
    assert page_files and all(f"h2a/edge/{p.as_posix()}" in names for p in page_files), "review page data"
