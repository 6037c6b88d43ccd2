"""edge-tune: the sweep on hand-made scores, site calibration, the report, and the sweep against
what edge-run really stores for the same clips and thresholds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from h2a.edge.alert_store import AlertStore
from h2a.edge.config import load_config
from h2a.edge.events import TypeThresholds
from h2a.edge.score_cache import ClipScores, ScoreCache, new_header
from h2a.edge.site_calibrate import calibrate, write_thresholds
from h2a.edge.sweep import judge, labelled_hours, predict, recommend, settings_grid
from h2a.runtime.labels import LabelledEvent

from .conftest import run_cli

TYPES = ["fighting", "riot"]
FPS = 10


def clip_scores(name: str, probs: np.ndarray) -> ClipScores:
    n = len(probs)
    return ClipScores(
        name, "", (320, 240), np.arange(n) / FPS, probs.astype(np.float32),
        np.zeros((n, 3), np.float32), np.zeros((n, 3, 4), np.float32), np.zeros((n, 3, 4), np.float32),
    )  # fmt: skip


def make_cache(clips: list[ClipScores]) -> ScoreCache:
    return ScoreCache(new_header("model", TYPES, {t: 0.5 for t in TYPES}, 1, "cfg"), clips)


def separable_clip(name: str, seconds: int, events: list[tuple[float, float]], seed: int) -> ClipScores:
    """fighting: 0.16-0.24 when normal, 0.71-0.79 inside the labelled intervals; riot stays low."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * FPS) / FPS
    inside = np.zeros(len(t), bool)
    for start, end in events:
        inside |= (t >= start) & (t < end)
    fighting = np.where(inside, 0.75, 0.20) + rng.uniform(-0.04, 0.04, len(t))
    riot = 0.1 + rng.uniform(-0.04, 0.04, len(t))
    return clip_scores(name, np.stack([fighting, riot], 1))


def test_the_sweep_recovers_a_separating_threshold() -> None:
    """Anomalies score 0.71-0.79, normal frames 0.16-0.24: every enter from 0.30 to 0.70 catches
    all and alarms never, whatever the minimum duration; 0.75 still catches each event on its
    frames above 0.75; 0.80 catches none. The recommendation is the most conservative: 0.75."""
    clips = [separable_clip(f"c{i}", 60, [(10.0 + i, 20.0 + i)], i) for i in range(4)]
    clips.append(separable_clip("normal", 120, [], 9))
    cache = make_cache(clips)
    labels = {f"c{i}": [LabelledEvent("fighting", 10.0 + i, 20.0 + i)] for i in range(4)} | {"normal": []}
    grid = settings_grid(TypeThresholds(ema=1.0, cooldown=0.0))
    events = predict(cache, {"fighting": grid})["fighting"]
    hours = labelled_hours(cache, labels)
    outcomes = [judge("fighting", th, ev, labels, hours) for th, ev in zip(grid, events, strict=True)]
    chosen, met = recommend(outcomes, target_fa_per_hour=0.0)
    assert met and chosen.recall == 1.0 and chosen.false_alarms == 0
    assert chosen.setting.enter == 0.75
    band = [o for o in outcomes if 0.30 <= o.setting.enter <= 0.70]
    assert band and all(o.recall == 1.0 and o.false_alarms == 0 for o in band)
    assert all(o.recall == 0.0 for o in outcomes if o.setting.enter >= 0.80)  # above every score


def test_sweep_rows_are_independent_of_each_other() -> None:
    """The bank steps all settings together; each row must give what it gives alone."""
    cache = make_cache([separable_clip("c", 60, [(5.0, 9.0), (30.0, 31.0)], 1)])
    grid = settings_grid(TypeThresholds(ema=0.6, cooldown=2.0))
    together = predict(cache, {"fighting": grid, "riot": grid})
    for i in range(0, len(grid), 7):
        alone = predict(cache, {"fighting": [grid[i]]})["fighting"][0]
        assert together["fighting"][i] == alone


def test_calibrate_on_normal_footage_meets_the_target_on_held_out_footage(tmp_path: Path) -> None:
    """A site where riot sits at 0.62-0.69 all day: the default 0.5 alarms constantly."""
    rng = np.random.default_rng(3)
    clips = []
    for i in range(3):
        n = 20 * 60 * FPS  # 20 minutes each, one hour in all
        fighting = 0.1 + 0.05 * rng.random(n)
        riot = 0.62 + 0.07 * rng.random(n)
        riot[rng.integers(0, n, 5)] = 0.5  # dips: each lets an event close and a new one open
        clips.append(clip_scores(f"site{i}", np.stack([fighting, riot], 1)))
    normal = make_cache(clips)
    base = {t: TypeThresholds(enter=0.5, exit=0.35, min_duration=0.5, cooldown=10.0, ema=0.5) for t in TYPES}
    (fighting_cal, riot_cal) = calibrate(normal, base, target_fa_per_hour=0.5, holdout=0.3)
    assert fighting_cal.after == base["fighting"]  # already quiet: never lowered by default
    assert riot_cal.after.enter > 0.69 and riot_cal.held_out_fa_per_hour <= 0.5 and riot_cal.target_met
    assert riot_cal.held_out_fa_per_hour_before > 0.5  # it was noisy before
    assert riot_cal.after.enter - riot_cal.after.exit == pytest.approx(0.15)  # the hysteresis gap is kept

    config = tmp_path / "edge.toml"
    config.write_text('# gate camera\n[camera]\nname = "gate-1"  # the north gate\n')
    write_thresholds(config, [fighting_cal, riot_cal], TYPES, "0.5 FA/h target")
    text = config.read_text()
    assert "# gate camera" in text and "# the north gate" in text  # the user's comments survive
    loaded = load_config(config, TYPES, {})
    assert loaded.thresholds["riot"].enter == pytest.approx(riot_cal.after.enter)
    assert loaded.camera.name == "gate-1"


def test_sweep_predicts_what_edge_run_stores(tiny_bundle: Path, tmp_path: Path) -> None:
    """Same clips, same thresholds: the sweep's events are edge-run's stored alerts, start and
    end positions included (one event code path)."""
    data = tmp_path / "clips"
    made = run_cli(
        "h2a.export_tools.data.generate",
        "--out",
        str(data),
        "--count",
        "3",
        "--size",
        "96",
        "--video",
        "--quiet",
    )
    assert made.returncode == 0, made.stderr
    videos = sorted((data / "videos").glob("*.mp4"))
    config = tmp_path / "edge.toml"

    def write_config(enter: float) -> None:
        config.write_text(
            "[detection]\ntriplet_score = 0.5\n[defaults]\nenter = 1.0\nexit = 0.0\nmin_duration = 0.0\n"
            f"cooldown = 0.3\nema = 0.7\n[anomaly.fighting]\nenter = {enter!r}\nexit = {enter - 0.002!r}\n"
        )

    def replay_to(scores: Path) -> ScoreCache:
        replay = run_cli(
            "h2a.edge.tune_cli", "replay", "--engine", str(tiny_bundle), "--source", str(data / "videos"),
            "--labels", str(data / "labels.json"), "--config", str(config), "--out", str(scores), "--quiet",
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        return ScoreCache.load(scores)

    # the untrained model's scores wander, so an enter threshold among them makes several events:
    # of a few quantiles of the frames' scores, the one with the most (it depends on the weights)
    write_config(0.5)
    probe = replay_to(tmp_path / "probe.scores")
    fighting = probe.header.anomalies.index("fighting")
    frame_scores = np.concatenate([clip.probs[:, fighting] for clip in probe.clips])
    base = load_config(config, probe.header.anomalies, probe.header.default_enter).thresholds["fighting"]

    def events_at(enter: float) -> int:
        th = dataclasses.replace(base, enter=enter, exit=enter - 0.002)
        return len(predict(probe, {"fighting": [th]})["fighting"][0])

    enter = max((float(q) for q in np.quantile(frame_scores, [0.5, 0.4, 0.6, 0.3, 0.7])), key=events_at)
    write_config(enter)
    scores = tmp_path / "run.scores"
    cache = replay_to(scores)
    th = load_config(config, cache.header.anomalies, cache.header.default_enter).thresholds
    predicted = predict(cache, {"fighting": [th["fighting"]]})["fighting"][0]
    assert len(predicted) >= 3
    for video in videos:
        alerts = tmp_path / f"alerts-{video.stem}"
        run = run_cli(
            "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video), "--alerts", str(alerts),
            "--config", str(config),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        stored = sorted((a.start_position, a.end_position) for a in AlertStore(alerts).alerts())
        mine = sorted((e.start, e.end) for e in predicted if e.clip == str(video.resolve()))
        assert len(stored) == len(mine)
        for (s1, e1), (s2, e2) in zip(stored, mine, strict=True):
            assert s1 == pytest.approx(s2, abs=1e-3) and e1 == pytest.approx(e2, abs=1e-3)

    out = tmp_path / "report"
    sweep = run_cli(
        "h2a.edge.tune_cli", "sweep", "--scores", str(scores), "--config", str(config), "--out", str(out)
    )
    assert sweep.returncode == 0, sweep.stderr
    assert "| fighting |" in sweep.stdout and "settings over" in sweep.stdout
    pngs = [*out.glob("tradeoff_*.png"), *(out / "timelines").glob("*.png")]
    assert len(pngs) == len(cache.header.anomalies) + len(videos)
    assert all(p.stat().st_size > 1000 for p in pngs)
    html = (out / "report.html").read_text()
    assert "<table>" in html and 'src="timelines/' in html and "<script" not in html
    again = run_cli(
        "h2a.edge.tune_cli", "replay", "--engine", str(tiny_bundle), "--source", str(data / "videos"),
        "--config", str(config), "--out", str(scores),
    )  # fmt: skip
    assert again.returncode == 0 and "(3 reused)" in again.stdout, again.stderr


def test_a_changed_clip_is_replayed_again(tmp_path: Path) -> None:
    """Reuse needs the same bytes: the cache records each clip's sha256."""
    from h2a.edge.score_cache import sha256_of

    a = tmp_path / "a.bin"
    a.write_bytes(b"one")
    first = sha256_of([a])
    a.write_bytes(b"two")
    assert sha256_of([a]) != first
    cache = make_cache([dataclasses.replace(clip_scores(str(a), np.zeros((3, 2))), sha256=first)])
    path = tmp_path / "x.scores"
    cache.save(path)
    back = ScoreCache.load(path)
    assert back.clips[0].sha256 == first and back.header.default_enter == {"fighting": 0.5, "riot": 0.5}


def test_alerts_marked_in_the_store_become_sweep_evidence(tmp_path: Path) -> None:
    from h2a.edge.sweep import alert_evidence

    from .test_alert_store import make_alert

    store = AlertStore(tmp_path / "alerts")
    for i, (start, end) in enumerate([(3.0, 6.0), (20.0, 21.0), (40.0, 41.0)]):
        a = make_alert(i)
        a.anomaly, a.source, a.start_position, a.end_position = "fighting", "/clips/a.mp4", start, end
        store.write(a, None)
    other = make_alert(9)
    other.source, other.start_position = "/clips/not-replayed.mp4", 1.0
    store.write(other, None)
    folder = str(tmp_path / "alerts")
    marked = [
        run_cli("h2a.edge.alerts_cli", "--alerts", folder, "label", "1", "true"),
        run_cli("h2a.edge.alerts_cli", "--alerts", folder, "label", "2", "false", "--note", "a shadow"),
        run_cli("h2a.edge.alerts_cli", "--alerts", folder, "label", "4", "false"),
    ]
    assert all(r.returncode == 0 for r in marked), [r.stderr for r in marked]
    missing = run_cli("h2a.edge.alerts_cli", "--alerts", folder, "label", "99", "true")
    assert missing.returncode == 2 and "no alert 99" in missing.stderr
    shown = run_cli("h2a.edge.alerts_cli", "--alerts", folder, "show", "2")
    assert "label       false (a shadow)" in shown.stdout
    cache = make_cache([clip_scores("/clips/a.mp4", np.zeros((600, 2)))])
    evidence = alert_evidence(tmp_path / "alerts", cache)
    assert evidence == {
        "/clips/a.mp4": [LabelledEvent("fighting", 3.0, 6.0)]
    }  # unmarked alert 3 adds nothing


def test_the_sweep_applies_zones_to_the_cached_triplets() -> None:
    """Two clips with the same scores; in one the actor stands in the armed zone."""
    from h2a.edge.config import parse_config

    inside, outside = (separable_clip(n, 30, [(5.0, 10.0)], 4) for n in ("in", "out"))
    for clip, x in ((inside, 20.0), (outside, 250.0)):
        clip.triplet_scores[:, 0] = 0.9
        clip.subject_boxes[:, 0] = (x, 100.0, x + 20.0, 140.0)
    zones = '[[zone]]\nname = "door"\npoints = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]\n'
    config = parse_config(zones, TYPES, {}, "v")
    setting = TypeThresholds(enter=0.5, exit=0.4, min_duration=0.0, cooldown=0.0, ema=1.0)
    cache = make_cache([inside, outside])
    zoned = predict(cache, {"fighting": [setting]}, config)["fighting"][0]
    assert [e.clip for e in zoned] == ["in"]
    assert len(predict(cache, {"fighting": [setting]})["fighting"][0]) == 2  # without zones: both


def test_a_running_edge_run_takes_calibrated_thresholds_and_refuses_a_bad_file(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from h2a.edge.site_calibrate import TypeCalibration

    from .test_edge_run import write_video

    video = write_video(tmp_path / "long.avi", 3000)
    config = tmp_path / "edge.toml"
    config.write_text('# site config\n[camera]\nname = "gate"\n')
    cmd = [sys.executable, "-m", "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video)]
    proc = subprocess.Popen(
        [*cmd, "--dry-run", "--config", str(config), "--status-every", "0.2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = proc.stderr
    assert stderr is not None

    def wait_for(fragment: str) -> str:
        deadline = time.time() + 60
        while time.time() < deadline:
            line = stderr.readline()
            if fragment in line:
                return line
        raise AssertionError(f"no {fragment!r} within 60 s")

    try:
        wait_for("event=status")
        th = TypeThresholds()
        raised = dataclasses.replace(th, enter=0.93, exit=0.8)
        calibrated = TypeCalibration("riot", th, raised, 0.0, 3.0, 0.0, True)
        write_thresholds(
            config,
            [calibrated],
            ["fighting", "shooting", "abuse", "car accident", "riot", "explosion"],
            "test",
        )
        os.utime(config, (time.time() + 5, time.time() + 5))
        reloaded = wait_for("event=config_reloaded")
        assert "version=" in reloaded
        config.write_text("[anomaly.riot]\nenter = 2\n")
        os.utime(config, (time.time() + 10, time.time() + 10))
        rejected = wait_for("event=config_rejected")
        assert "'anomaly.riot.enter'" in rejected
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_sweep_bench_runs(tmp_path: Path) -> None:
    result = run_cli("h2a.edge.sweep_bench", "--hours", "0.02", "--settings", "10")
    assert result.returncode == 0 and "swept 10 settings x 6 types over 720 frames" in result.stdout


def test_calibrate_on_generated_normal_clips_meets_the_target_on_held_out_parts(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    import json

    normal = tmp_path / "normal"
    made = run_cli(
        "h2a.export_tools.data.generate", "--out", str(normal), "--count", "6", "--size", "96", "--video",
        "--normal-only", "--quiet",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    scores = tmp_path / "normal.scores"
    replay = run_cli(
        "h2a.edge.tune_cli", "replay", "--engine", str(tiny_bundle), "--source", str(normal / "videos"),
        "--out", str(scores), "--quiet",
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    config = tmp_path / "edge.toml"
    out = tmp_path / "calib.json"
    calib = run_cli(
        "h2a.edge.tune_cli", "calibrate", "--scores", str(scores), "--target-fa", "0",
        "--config", str(config), "--json", str(out), "--allow-lower",
    )  # fmt: skip
    assert calib.returncode == 0, calib.stderr
    results = json.loads(out.read_text())
    assert len(results) == 6 and all(r["target_met"] for r in results)
    assert all(r["held_out_fa_per_hour"] == 0 for r in results)
    assert "[anomaly.riot]" in config.read_text() and "wrote thresholds into" in calib.stdout


def test_alarms_counts_what_the_configs_thresholds_raise_on_normal_footage(tmp_path: Path) -> None:
    """Two clips of 60 s: riot crosses 0.5 twice in the normal one; the other clip's fighting
    event is labelled, so it is not a false alarm, and its riot stays low."""
    import json

    t = np.arange(60 * FPS) / FPS
    riot = np.where(((t > 10) & (t < 14)) | ((t > 40) & (t < 45)), 0.9, 0.1)
    normal = clip_scores("normal", np.stack([np.full(len(t), 0.1), riot], 1))
    fighting = np.where((t > 20) & (t < 30), 0.9, 0.1)
    event = clip_scores("event", np.stack([fighting, np.full(len(t), 0.1)], 1))
    header = dataclasses.replace(make_cache([]).header, labels={"event": [("fighting", 20.0, 30.0)]})
    cache = ScoreCache(header, [normal, event])
    path = tmp_path / "run.scores"
    cache.save(path)
    out = tmp_path / "alarms.json"
    result = run_cli("h2a.edge.tune_cli", "alarms", "--scores", str(path), "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["per_type"]["riot"]["false_alarms"] == 2
    assert report["per_type"]["fighting"]["false_alarms"] == 0  # the labelled event
    assert report["hours"] == pytest.approx(120 / 3600, rel=0.02)
    assert report["false_alarms_per_hour"] == pytest.approx(2 / report["hours"])
    assert "all types" in result.stdout
