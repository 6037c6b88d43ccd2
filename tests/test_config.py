"""The TOML config: errors name the key; reload keeps the old config on a bad edit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from h2a.edge.config import ConfigError, ConfigWatcher, parse_config

ANOMALIES = ["fighting", "shooting"]
ENTER = {"fighting": 0.5, "shooting": 0.6}

GOOD = """
[camera]
name = "gate-1"
frame_stride = 2

[defaults]
exit = 0.3
cooldown = 5

[anomaly.shooting]
enter = 0.4

[[zone]]
name = "entrance"
points = [[0, 0], [0.5, 0], [0.5, 1]]
"""


def test_good_config_merges_defaults_bundle_and_per_type() -> None:
    cfg = parse_config(GOOD, ANOMALIES, ENTER, "v1")
    assert cfg.camera.name == "gate-1" and cfg.camera.frame_stride == 2
    assert cfg.thresholds["fighting"].enter == 0.5  # from the bundle
    assert cfg.thresholds["shooting"].enter == 0.4  # per type
    assert cfg.thresholds["shooting"].exit == 0.3 and cfg.thresholds["fighting"].cooldown == 5
    assert cfg.zones[0].name == "entrance"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[camera]\nfps = 5", "'camera.fps'"),
        ("[camera]\nframe_stride = 'two'", "'camera.frame_stride'"),
        ("[camera]\nframe_stride = 1.5", "'camera.frame_stride'"),
        ("[anomaly.robbery]\nenter = 0.5", "'anomaly.robbery'"),
        ("[anomaly.shooting]\nenter = 0.2\nexit = 0.4", "anomaly.shooting.exit"),
        ("[alerts]\njpeg_quality = 101", "'alerts.jpeg_quality'"),
        ("[[zone]]\nname = 'x'\npoints = [[0, 0], [2, 0], [0, 1]]", "'zone[0].points'"),
        ("[weather]\nrain = true", "'weather'"),
        ("[camera\n", "not valid TOML"),
        ("[camera]\nname = 5", "'camera.name' must be str, got int"),
        ("[camera]\nfps_cap = -1", "'camera.fps_cap' must be at least 0"),
        ("[defaults]\nema = 1.5", "'defaults.ema' must be at most 1.0"),
        ("[detection]\ntriplet_score = true", "'detection.triplet_score' must be float, got bool"),
    ],
)
def test_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, ANOMALIES, ENTER, "v")
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_reload_applies_good_edits_and_keeps_the_old_config_on_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(GOOD)
    watcher = ConfigWatcher(path, ANOMALIES, ENTER, {"fighting": 0.7})
    assert watcher.config.thresholds["fighting"].enter == 0.7  # the flag wins
    assert watcher.poll() == (None, None)
    path.write_text(GOOD.replace("enter = 0.4", "enter = 0.45"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    config, error = watcher.poll()
    assert error is None and config is not None and config.thresholds["shooting"].enter == 0.45
    assert config.thresholds["fighting"].enter == 0.7  # still the flag
    path.write_text("[camera]\nbogus = 1\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    config, error = watcher.poll()
    assert config is None and error is not None and "'camera.bogus'" in error
    assert watcher.config.thresholds["shooting"].enter == 0.45
