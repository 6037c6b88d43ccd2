"""The alert store on real SQLite files: round trip, export, retention, crash safety."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from h2a.edge.alert_store import SCHEMA_VERSION, SNAPSHOT_DIR, AlertStore, StoreError
from h2a.edge.alerts import Alert

from .conftest import run_cli


def make_alert(i: int = 0, start: float | None = None) -> Alert:
    return Alert(
        camera="cam",
        anomaly="shooting",
        start_time=time.time() if start is None else start,
        peak_score=0.8,
        peak_time=time.time(),
        what="a man is aiming a gun",
        who="a man and a gun",
        location="in the middle of the image",
        caption=f"caption {i}",
        triplets=[
            {
                "subject": "person",
                "action": "aim",
                "object": "gun",
                "score": 0.7,
                "subject_box": [1, 2, 3, 4],
                "object_box": [5, 6, 7, 8],
            }
        ],
        zones=["entrance"],
        model_sha256="ab" * 32,
        config_version="v1",
    )


def test_write_update_and_read_back(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    a = make_alert()
    assert store.write(a, b"\xff\xd8jpeg1") is True  # a new row
    first_snapshot = a.snapshot
    assert a.id == 1 and first_snapshot and (tmp_path / first_snapshot).read_bytes() == b"\xff\xd8jpeg1"
    # a peak re-caption of the same event: a fresh Alert object with the event's uid
    again = dataclasses.replace(make_alert(), uid=a.uid, caption="better caption", peak_score=0.9)
    assert store.write(again, b"\xff\xd8jpeg2") is False  # the same row, updated
    assert again.id == a.id and again.created == a.created
    assert store.close_alert(a.uid, a.start_time + 3)
    assert not store.close_alert("no-such-event", 1.0)
    got = store.get(1)
    assert (
        got is not None
        and got.caption == "better caption"
        and got.end_time == pytest.approx(a.start_time + 3)
    )
    assert got.snapshot and (tmp_path / got.snapshot).is_file()
    assert not (tmp_path / first_snapshot).exists()  # the re-caption replaced the snapshot
    assert store.integrity() == "ok"
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_retention_by_age_and_quota(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    now = time.time()
    for i in range(6):
        store.write(make_alert(i, start=now - (10 - i) * 86400), b"x" * 100_000)
    assert store.enforce_retention(max_age_s=7 * 86400, max_bytes=1e12, now=now) == (
        3,
        0,
    )  # 10, 9, 8 days old
    assert store.count() == 3
    removed, _ = store.enforce_retention(max_age_s=1e9, max_bytes=store.disk_bytes() - 150_000, now=now)
    assert removed >= 1 and store.count() <= 2
    assert len(list((tmp_path / SNAPSHOT_DIR).iterdir())) == store.count()


def test_schema_version_is_checked(tmp_path: Path) -> None:
    AlertStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "alerts.db")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        AlertStore(tmp_path)


def test_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(StoreError, match="cannot open the alert store"):
        AlertStore(folder / "alerts")


def test_cli_list_show_export(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    for i in range(3):
        store.write(make_alert(i), b"jpeg")
    store.close()
    listed = run_cli("h2a.edge.alerts_cli", "--alerts", str(tmp_path), "list", timeout=60)
    assert listed.returncode == 0 and "3 alerts" in listed.stdout and "caption 2" in listed.stdout
    shown = run_cli("h2a.edge.alerts_cli", "--alerts", str(tmp_path), "show", "2", timeout=60)
    assert "What:       a man is aiming a gun" in shown.stdout and "person aim gun" in shown.stdout
    out = tmp_path / "alerts.jsonl"
    run_cli("h2a.edge.alerts_cli", "--alerts", str(tmp_path), "export", "--jsonl", str(out), timeout=60)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["caption"] for x in lines] == ["caption 0", "caption 1", "caption 2"]
    missing = run_cli("h2a.edge.alerts_cli", "--alerts", str(tmp_path / "nope"), "list", timeout=60)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    no_alert = run_cli("h2a.edge.alerts_cli", "--alerts", str(tmp_path), "show", "99", timeout=60)
    assert (
        no_alert.returncode == 2
        and no_alert.stderr.strip() == f"edge-alerts: error: no alert 99 in {tmp_path}"
    )
    # the work failed (a folder that does not exist): exit 1, one line, as in every edge-* command
    unwritable = tmp_path / "no-such-folder" / "alerts.jsonl"
    failed = run_cli("h2a.edge.alerts_cli", "--alerts", str(tmp_path), "export", "--jsonl", str(unwritable))
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"edge-alerts: error: No such file or directory: {unwritable}.tmp"
    ]


WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.test_alert_store import make_alert
from h2a.edge.alert_store import AlertStore
store = AlertStore(sys.argv[1])
i = 0
while True:
    a = make_alert(i)
    store.write(a, b"\\xff\\xd8" + bytes(20000))
    print(a.id, flush=True)   # reported written only after the commit returned
    i += 1
"""


def test_kill_9_during_heavy_writing_loses_no_reported_alert(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=root), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    reported: list[int] = []
    assert proc.stdout is not None
    deadline = time.time() + 60
    while len(reported) < 150 and time.time() < deadline:
        reported.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reported += [int(x) for x in proc.stdout.read().split()]
    store = AlertStore(tmp_path)  # reopening sweeps half-written snapshots
    assert store.integrity() == "ok"
    ids = {a.id for a in store.alerts()}
    assert set(reported) <= ids
    for alert in store.alerts():
        assert alert.snapshot and (tmp_path / alert.snapshot).stat().st_size == alert.snapshot_bytes
    assert not [p for p in (tmp_path / SNAPSHOT_DIR).iterdir() if p.name.endswith(".tmp")]


#: The table as the first release wrote it, literally: the derived schema must read such stores.
FIRST_RELEASE_TABLE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE, camera TEXT NOT NULL,
    anomaly TEXT NOT NULL, start_time REAL NOT NULL, end_time REAL, peak_score REAL NOT NULL,
    peak_time REAL NOT NULL, what TEXT NOT NULL, who TEXT NOT NULL, location TEXT NOT NULL,
    caption TEXT NOT NULL, triplets TEXT NOT NULL, zones TEXT NOT NULL, snapshot TEXT,
    snapshot_bytes INTEGER NOT NULL DEFAULT 0, model_sha256 TEXT NOT NULL,
    config_version TEXT NOT NULL {created}
);
"""
FIRST_RELEASE_ROW = (
    "INSERT INTO alerts (uid, camera, anomaly, start_time, peak_score, peak_time, what, who, location, "
    "caption, triplets, zones, model_sha256, config_version{created_col}) VALUES ('u1', 'cam', "
    "'riot', 5.0, 0.7, 6.0, 'w', 'h', 'l', 'old caption', '[]', '[]', 'm', 'v'{created_val})"
)


def _old_store(folder: Path, version: int, with_created: bool) -> None:
    db = sqlite3.connect(folder / "alerts.db")
    db.executescript(FIRST_RELEASE_TABLE.format(created=", created REAL NOT NULL" if with_created else ""))
    db.execute(
        FIRST_RELEASE_ROW.format(
            created_col=", created" if with_created else "", created_val=", 7.0" if with_created else ""
        )
    )
    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
    db.commit()
    db.close()


def test_a_first_release_store_is_read_then_upgraded_in_place(tmp_path: Path) -> None:
    _old_store(tmp_path, 1, with_created=True)
    (tmp_path / SNAPSHOT_DIR).mkdir()
    (old,) = AlertStore(tmp_path, readonly=True).alerts()  # a reader fills what v1 lacks with defaults
    assert (old.uid, old.caption, old.created, old.end_time, old.start_position) == (
        "u1",
        "old caption",
        7.0,
        None,
        None,
    )
    store = AlertStore(tmp_path)  # the writer adds the columns of version 2
    new = make_alert(1)
    new.start_position = 12.5
    assert store.write(new, None) and new.id == 2
    assert [(a.uid, a.start_position) for a in store.alerts()] == [(new.uid, 12.5), ("u1", None)]
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )


def test_an_older_schema_gains_its_missing_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    _old_store(tmp_path, 0, with_created=False)
    assert AlertStore(tmp_path, readonly=True).get(1) is not None  # readable as it is
    store = AlertStore(tmp_path)  # the writer upgrades in place
    (old,) = store.alerts()
    assert old.caption == "old caption" and old.created == 0.0
    store.close()
    assert AlertStore(tmp_path, readonly=True).count() == 1


def test_evidence_clips_count_in_the_quota_and_go_with_their_alert(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    now = time.time()
    alerts = [make_alert(i, start=now - (3 - i) * 60) for i in range(3)]
    for a in alerts:
        store.write(a, b"jpeg")
        assert store.attach_clip(a.uid, b"\x00" * 200_000) == f"clips/{a.uid}.mp4"
    assert store.attach_clip("no-such-event", b"x") is None
    assert store.disk_bytes() > 600_000
    store.enforce_retention(max_age_s=1e9, max_bytes=store.disk_bytes() - 100_000, now=now)
    left = {a.uid for a in store.alerts()}
    assert alerts[0].uid not in left  # the oldest went, with its clip
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == sorted(f"{u}.mp4" for u in left)
    (tmp_path / "clips" / "stray.mp4").write_bytes(b"half")  # a crash between file and row
    store.close()
    AlertStore(tmp_path)
    assert not (tmp_path / "clips" / "stray.mp4").exists()


def test_the_outbox_orders_changes_and_retention_keeps_what_is_owed(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    now = time.time()
    a, b = make_alert(1, start=now - 10 * 86400), make_alert(2, start=now - 9 * 86400)
    store.write(a, None)
    store.write(b, None)
    store.close_alert(a.uid, now)  # a change of a: it goes behind b
    assert [(x.uid, x.forward_seq) for x in store.pending(10)] == [(b.uid, 2), (a.uid, 3)]
    store.mark_forwarded(b.uid, 2)
    assert store.backlog() == 1
    assert store.enforce_retention(7 * 86400, 1e12, now, keep_unforwarded=True) == (1, 0)  # only b went
    assert [x.uid for x in store.alerts()] == [a.uid]
    assert store.enforce_retention(7 * 86400, 0, now, keep_unforwarded=True) == (1, 1)  # the quota wins
