"""A short soak of a real edge-run (`h2a.edge.soak_bench`): an alert every 100 frames, written
with snapshot and caption, while /proc is sampled. Threads and file descriptors must not grow
after warm-up and status lines must keep coming; memory gets a loose bound here (a 2,000-frame run
is mostly warm-up), the 5% bound belongs to the 100,000-frame benchmark run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from h2a.edge.soak_bench import proc_sample, soak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_run_that_just_exited_gives_no_sample_rather_than_an_error() -> None:
    """The soak loop samples until `poll` sees the exit; in between, /proc shows a zombie without
    memory lines (a CI run under load hit it: KeyError 'VmRSS')."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    status = Path(f"/proc/{child.pid}/status")
    deadline = time.monotonic() + 30
    while "zombie" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "zombie" in status.read_text()
    assert proc_sample(child.pid) is None
    child.wait()
    me = proc_sample(os.getpid())
    assert me is not None and me.rss_kb > 0 and me.threads >= 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_short_soak_leaks_no_threads_or_descriptors(tiny_bundle: Path, tmp_path: Path) -> None:
    result = soak(
        tiny_bundle, frames=2000, period=50, max_growth=0.25, work=tmp_path, progress=False, sample_every=0.2
    )
    assert result.frames == 2000 and result.alerts >= 15, result
    assert result.threads_end <= result.threads_warm and result.fds_end <= result.fds_warm, result
    assert result.status_lines >= 2 and result.longest_status_gap_s < 10.0, result
    assert result.passed, result
