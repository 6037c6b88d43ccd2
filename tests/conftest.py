"""Shared fixtures: one tiny random-init bundle exported for real, reused by the whole session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# OpenVINO's compiled-graph cache goes to a folder of this run, for the CLIs the tests start too.
os.environ["H2A_CACHE_DIR"] = tempfile.mkdtemp(prefix="h2a-test-cache-")


def run_cli(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a CLI as a user would (a fresh process), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "tiny.plan"
    result = run_cli(
        "h2a.export_tools.export.cli", "--random-init", "--preset", "tiny", "--out", str(out), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    return out
