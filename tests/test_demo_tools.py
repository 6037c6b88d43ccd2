"""The demo's own tools: the self-check (alerts matched to the clips' ground truth by clip, type
and time) and README's table written from demo runs' files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from h2a.export_tools.demo_check import check_clips, summary
from h2a.export_tools.demo_table import BEGIN, END, main, run_values, table
from h2a.runtime.errors import InputError

VIDEOS = [
    {
        "file": "videos/clip_000.mp4",
        "fps": 10,
        "events": [{"type": "abuse", "start_frame": 30, "end_frame": 60}],
    },
    {
        "file": "videos/clip_001.mp4",
        "fps": 10,
        "events": [{"type": "fighting", "start_frame": 20, "end_frame": 50}],
    },
    {"file": "videos/clip_002.mp4", "fps": 10, "events": []},
]


def alert(clip: str, anomaly: str, at: float) -> dict[str, Any]:
    return {"source": f"/home/me/build/demo/videos/videos/{clip}", "anomaly": anomaly, "start_position": at}


def test_every_clip_right_passes() -> None:
    verdicts = check_clips(
        VIDEOS, [alert("clip_000.mp4", "abuse", 3.4), alert("clip_001.mp4", "fighting", 2.2)]
    )
    assert [v.ok for v in verdicts] == [True, True, True]
    assert "PASSED" in summary(verdicts)


def test_missed_event_wrong_type_and_false_alarm_are_each_named() -> None:
    verdicts = check_clips(
        VIDEOS,
        [
            alert("clip_000.mp4", "riot", 3.4),  # right time, wrong type
            alert("clip_002.mp4", "shooting", 1.0),  # a normal clip alerts
        ],
    )
    by_clip = {v.clip: v for v in verdicts}
    assert by_clip["clip_000.mp4"].missed == ["abuse"] and by_clip["clip_000.mp4"].wrong == ["riot at 3.4 s"]
    assert by_clip["clip_001.mp4"].missed == ["fighting"]  # nothing alerted: the case
    assert by_clip["clip_002.mp4"].wrong == ["shooting at 1.0 s"]
    text = summary(verdicts)
    assert "FAILED on 3 of 3" in text and "missed fighting" in text


def test_an_alert_far_from_its_event_does_not_count() -> None:
    late = check_clips(VIDEOS[:1], [alert("clip_000.mp4", "abuse", 6.0 + 2.5)])
    assert late[0].missed == ["abuse"] and late[0].wrong == ["abuse at 8.5 s"]
    twice = check_clips(
        VIDEOS[:1], [alert("clip_000.mp4", "abuse", 3.1), alert("clip_000.mp4", "abuse", 5.0)]
    )
    assert twice[0].found == ["abuse"] and twice[0].wrong == ["abuse at 5.0 s"]  # one event, one alert


def test_alerts_from_other_sources_are_false_alarms() -> None:
    verdicts = check_clips(VIDEOS[:1], [alert("clip_000.mp4", "abuse", 3.0), alert("other.mp4", "riot", 1.0)])
    assert verdicts[-1].clip == "other.mp4" and not verdicts[-1].ok


def _run(folder: Path, auc: float, role: float, per_hour: float) -> Path:
    folder.mkdir()
    report = {"anomaly_auc": auc, "hoi_role_map": role, "cider_d": 5.0}
    (folder / "eval.json").write_text(json.dumps({"model.pt (checkpoint)": report}))  # as edge-eval writes it
    (folder / "int8_report.json").write_text(
        json.dumps({"passed": True, "deltas": {"caption_token_agreement": 0.95}})
    )
    (folder / "alarms.json").write_text(json.dumps({"false_alarms_per_hour": per_hour}))
    return folder


def test_readme_table_comes_from_the_runs_files(tmp_path: Path) -> None:
    runs = [_run(tmp_path / "a", 0.96, 0.30, 10.0), _run(tmp_path / "b", 0.98, 0.36, 20.0)]
    text = table([run_values(r) for r in runs])
    assert "| anomaly AUC | 0.970 | 0.960 – 0.980 | 0.960 / 0.980 | ≥ 0.95 |" in text
    assert "| HOI role mAP | 0.330 | 0.300 – 0.360 |" in text
    assert "| false alarms per hour, 45 held-out normal clips | 15.0 |" in text
    assert "anomaly-type mAP" not in text  # no run measured it: no row
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\nrest\n")
    assert main([str(r) for r in runs] + ["--readme", str(readme)]) == 0
    written = readme.read_text()
    assert "old table" not in written and text in written
    assert written.startswith("intro\n") and written.endswith(f"{END}\nrest\n")


def test_a_folder_without_eval_json_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"eval\.json: not found"):
        run_values(tmp_path)
