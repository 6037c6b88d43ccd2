"""The review page (`edge-alerts serve`) in a real headless Chromium driven by Selenium, over an
alert store written by a real `edge-run` (snapshots, evidence clips) and a real `edge-tune sweep`
report; plus plain HTTP requests for what a browser would never send (path traversal, forged
POSTs). The browser tests skip, saying why, where Chromium or its driver is not installed."""

from __future__ import annotations

import http.client
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from h2a.edge.alert_store import AlertStore

from .conftest import run_cli
from .test_edge_run_events import flapping_config, noise_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
)
WAIT_S = 20.0


@pytest.fixture(scope="module")
def site(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A store edge-run filled (snapshots, evidence clips) from a clip whose fighting score crosses
    its threshold many times, and a sweep report over generated labelled clips."""
    root = tmp_path_factory.mktemp("review")
    data = root / "clips"
    made = run_cli(
        "h2a.export_tools.data.generate", "--out", str(data), "--count", "2", "--size", "96", "--video",
        "--quiet",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    # noise frames: the untrained model's score wanders around the threshold, so events come and go
    video = noise_video(root / "noise.avi", 60)
    config = flapping_config(tiny_bundle, video, root / "edge.toml", 60)
    alerts = root / "alerts"
    run = run_cli(
        "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video), "--alerts", str(alerts),
        "--config", str(config), "--record",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    scores = root / "run.scores"
    replay = run_cli(
        "h2a.edge.tune_cli", "replay", "--engine", str(tiny_bundle), "--source", str(data / "videos"),
        "--labels", str(data / "labels.json"), "--config", str(config), "--out", str(scores), "--quiet",
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    sweep = run_cli(
        "h2a.edge.tune_cli", "sweep", "--scores", str(scores), "--config", str(config),
        "--out", str(alerts / "reports" / "first"),
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    store = AlertStore(alerts, readonly=True)
    assert store.count() >= 3, "the flapping config should give several alerts"
    assert any(a.clip for a in store.alerts()), "--record should have stored evidence clips"
    store.close()
    return {"alerts": alerts, "config": config, "video": video, "clips": data / "videos"}


class Server:
    """`edge-alerts serve` in its own process on a free port."""

    def __init__(self, alerts: Path, *args: str) -> None:
        cmd = [
            sys.executable,
            "-m",
            "h2a.edge.alerts_cli",
            "--alerts",
            str(alerts),
            "serve",
            "--port",
            "0",
            *args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.lines = [self.proc.stdout.readline()]
        if "review page:" not in self.lines[0]:
            self.proc.kill()
            raise AssertionError(f"serve did not start: {self.lines[0]!r} {self.proc.stderr.read()}")  # type: ignore[union-attr]
        link = self.lines[0].split("review page: ", 1)[1].split()[0]
        if "?token=" in link:  # a new token: a second line says where it is kept
            self.lines.append(self.proc.stdout.readline())
        self.port = int(link.split(":")[2].split("/")[0])
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = link.split("?token=", 1)[1] if "?token=" in link else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A raw request: the path goes on the wire exactly as given (no client normalisation)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in {**(headers or {}), **({"Content-Length": str(len(body))} if body else {})}.items():
            conn.putheader(key, value)
        if body and "Content-Type" not in (headers or {}):
            conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.endheaders(body.encode() if body else None)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data


@pytest.fixture
def server(site: dict[str, Path]) -> Iterator[Server]:
    s = Server(site["alerts"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    driver = start_chrome("--autoplay-policy=no-user-gesture-required")
    yield driver
    driver.quit()


def start_chrome(*extra: str) -> Any:
    """Headless Chromium (the flags the Debian build needs here) at 1280x1000, driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--window-size=1280,1000", *extra):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    """Poll until `condition` is truthy; an element that vanished mid-navigation counts as not yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _label(alerts: Path, alert_id: int) -> str | None:
    alert = AlertStore(alerts, readonly=True).get(alert_id)
    assert alert is not None
    return alert.label


def _state(folder: Path) -> str:
    from h2a.edge.status_file import read_status

    status = read_status(folder)
    assert status is not None
    return str(status["state"])


def _stored(alerts: Path) -> list[Any]:
    store = AlertStore(alerts, readonly=True)
    try:
        return list(store.alerts())
    finally:
        store.close()


# ---- in the browser ---------------------------------------------------------------------------------
@needs_browser
def test_the_list_shows_the_stores_alerts_newest_first(
    server: Server, browser: Any, site: dict[str, Path]
) -> None:
    from selenium.webdriver.common.by import By

    stored = _stored(site["alerts"])
    browser.get(server.url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.alert")
    assert [int(r.get_attribute("data-id")) for r in rows] == [a.id for a in stored][:50]
    first = rows[0]
    assert first.find_element(By.CSS_SELECTOR, "td.type").text == stored[0].anomaly
    assert first.find_element(By.CSS_SELECTOR, "td.caption").text == stored[0].caption
    thumbs = browser.find_elements(By.CSS_SELECTOR, "td.thumb img")
    assert len(thumbs) == sum(1 for a in stored[:50] if a.snapshot)
    wait_for(
        lambda: all(
            browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", t)
            for t in thumbs
        ),
        "thumbnails",
    )
    # the run that wrote the store has stopped; its last status is on the page
    assert browser.find_element(By.ID, "status-state").text == "stopped"
    # CSP: nothing on the page broke it (no inline script or style to refuse)
    assert not [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]


@needs_browser
def test_open_an_alert_watch_its_clip_and_mark_it_false(
    server: Server, browser: Any, site: dict[str, Path]
) -> None:
    from selenium.webdriver.common.by import By

    stored = _stored(site["alerts"])
    target = next(a for a in stored if a.clip and a.snapshot)
    browser.get(server.url + "/")
    browser.find_element(By.CSS_SELECTOR, f'tr.alert[data-id="{target.id}"] a.open').click()
    wait_for(lambda: browser.current_url.endswith(f"/alerts/{target.id}"), "the alert page")
    assert browser.find_element(By.ID, "what").text == target.what
    assert browser.find_element(By.ID, "who").text == target.who
    assert browser.find_element(By.ID, "where").text == target.location
    rows = browser.find_elements(By.CSS_SELECTOR, "#triplets tbody tr")
    assert len(rows) == max(1, len(target.triplets))
    snapshot = browser.find_element(By.ID, "snapshot")
    wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", snapshot) > 0, "the snapshot")
    clip = browser.find_element(By.ID, "clip")
    # the browser decodes the (transcoded) clip: metadata with a real duration, no media error
    duration = wait_for(
        lambda: browser.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration", clip),
        "the clip",
    )
    assert duration > 0 and browser.execute_script("return arguments[0].error", clip) is None

    browser.find_element(By.NAME, "note").send_keys("a shadow")
    browser.find_element(By.ID, "mark-false").click()
    wait_for(lambda: "false" in browser.find_element(By.ID, "label").text, "the label on the page")
    after = AlertStore(site["alerts"], readonly=True).get(target.id)
    assert after is not None and after.label == "false" and after.label_note == "a shadow"

    browser.get(server.url + "/?label=false")
    ids = [int(r.get_attribute("data-id")) for r in browser.find_elements(By.CSS_SELECTOR, "tr.alert")]
    assert target.id in ids and all(a.label == "false" for a in stored if a.id in ids and a.id != target.id)
    browser.get(server.url + f"/alerts/{target.id}")
    browser.find_element(By.ID, "mark-clear").click()
    wait_for(lambda: "Not labelled" in browser.find_element(By.ID, "label").text, "the cleared label")
    assert _label(site["alerts"], target.id) is None


@needs_browser
def test_filters_by_type_and_time(server: Server, browser: Any, site: dict[str, Path]) -> None:
    from selenium.webdriver.common.by import By

    stored = _stored(site["alerts"])
    kind = stored[0].anomaly
    browser.get(server.url + f"/?type={kind.replace(' ', '+')}")
    ids = {int(r.get_attribute("data-id")) for r in browser.find_elements(By.CSS_SELECTOR, "tr.alert")}
    assert ids == {a.id for a in stored if a.anomaly == kind}
    browser.get(server.url + "/?until=2000-01-01")
    assert browser.find_elements(By.CSS_SELECTOR, "tr.alert") == []
    browser.get(server.url + "/?since=yesterday")
    assert "not a date" in browser.find_element(By.CSS_SELECTOR, ".error").text


@needs_browser
def test_the_report_page_shows_the_latest_sweep_with_its_plots(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/report")
    assert browser.find_elements(By.CSS_SELECTOR, ".report table")
    plots = browser.find_elements(By.CSS_SELECTOR, "figure img")
    assert len(plots) >= 2  # a trade-off per type and a timeline per clip
    wait_for(
        lambda: all(browser.execute_script("return arguments[0].naturalWidth", p) > 0 for p in plots),
        "the plots",
    )


@needs_browser
def test_the_status_panel_follows_a_running_edge_run(
    server: Server, browser: Any, site: dict[str, Path], tiny_bundle: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    config = tmp_path / "slow.toml"
    config.write_text(site["config"].read_text() + "[camera]\nfps_cap = 15.0\n")
    video = site["video"]
    run = subprocess.Popen(
        [sys.executable, "-m", "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video),
         "--alerts", str(site["alerts"]), "--config", str(config), "--status-every", "0.5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        browser.get(server.url + "/")
        state = browser.find_element(By.ID, "status-state")
        wait_for(lambda: state.text == "running", "the panel to say running")

        def processed() -> int:  # read in one script: the panel's rows are replaced as it refreshes
            script = (
                "for (const d of document.querySelectorAll('#status-rows div'))"
                " if (d.querySelector('dt').textContent === 'frames processed')"
                " return Number(d.querySelector('dd').textContent); return -1;"
            )
            return int(browser.execute_script(script))

        first = wait_for(lambda: processed() > 0 and processed(), "a frame count")
        wait_for(lambda: processed() > first, "the frame count to grow (the panel refreshes itself)")
        assert run.wait(timeout=120) == 0
        wait_for(lambda: state.text == "stopped", "the panel to say stopped")
    finally:
        run.kill()


@needs_browser
def test_beyond_loopback_the_page_wants_its_token(
    site: dict[str, Path], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    token_file = tmp_path / "review.token"
    s = Server(site["alerts"], "--host", "0.0.0.0", "--token-file", str(token_file))
    try:
        assert s.token is not None and token_file.read_text().strip() == s.token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        browser.delete_all_cookies()
        browser.get(s.url + "/")
        assert "Token required" in browser.find_element(By.TAG_NAME, "h1").text
        browser.get(s.url + "/?token=not-the-token")
        assert "Token required" in browser.find_element(By.TAG_NAME, "h1").text
        assert browser.find_elements(By.CSS_SELECTOR, "tr.alert") == []
        browser.get(s.url + f"/?token={s.token}")
        assert "token=" not in browser.current_url  # the token leaves the address bar
        assert browser.find_elements(By.CSS_SELECTOR, "tr.alert")
        browser.get(s.url + "/report")  # the cookie carries on
        assert "Token required" not in browser.page_source
        browser.delete_all_cookies()
    finally:
        s.stop()
    again = Server(site["alerts"], "--host", "0.0.0.0", "--token-file", str(token_file))
    try:  # a restart keeps the token, and says where it is instead of printing it
        assert again.token is None and str(token_file) in again.lines[0]
        status, _, _ = again.request("GET", "/", headers={"Authorization": f"Bearer {s.token}"})
        assert status == 200
        status, _, _ = again.request("GET", "/api/status")
        assert status == 401
    finally:
        again.stop()


# ---- plain HTTP ---------------------------------------------------------------------------------------
TRAVERSALS = (
    "/alerts.db",
    "/static/../alerts.db",
    "/static/..%2Falerts.db",
    "/static/%2e%2e%2falerts.db",
    "/static/%2Fetc%2Fpasswd",
    "/static//etc/passwd",
    "//etc/passwd",
    "/alerts/1/../../alerts.db",
    "/alerts/1/snapshot.jpg/../../../alerts.db",
    "/alerts/..%2F..%2Falerts.db",
    "/alerts/-1/snapshot.jpg",
    "/report/plot/999",
    "/report/plot/-1",
    "/report/plot/..%2F..%2Falerts.db",
    "/reports/first/report.json",
    "/status.json",
)


def test_files_are_served_by_id_only(server: Server, site: dict[str, Path]) -> None:
    stored = _stored(site["alerts"])
    with_snapshot = next(a for a in stored if a.snapshot)
    paths = [
        *TRAVERSALS,
        f"/{with_snapshot.snapshot}",
        f"/snapshots/../{with_snapshot.snapshot}",
        "/etc/passwd",
    ]
    for path in paths:
        status, _, body = server.request("GET", path)
        assert status == 404, path
        assert not body.startswith(b"SQLite format") and b"root:" not in body, path
    status, headers, body = server.request("GET", f"/alerts/{with_snapshot.id}/snapshot.jpg")
    assert status == 200 and body == (site["alerts"] / with_snapshot.snapshot).read_bytes()
    assert headers["content-type"] == "image/jpeg"
    status, headers, _ = server.request("GET", "/")
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_a_tampered_row_cannot_name_a_file_outside_the_store(site: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "alerts"
    shutil.copytree(site["alerts"], copy)
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    with sqlite3.connect(copy / "alerts.db") as db:
        db.execute("UPDATE alerts SET snapshot = '../secret.jpg', clip = '/etc/passwd'")
    s = Server(copy)
    try:
        first = _stored(copy)[0]
        for path in (f"/alerts/{first.id}/snapshot.jpg", f"/alerts/{first.id}/thumb.jpg",
                     f"/alerts/{first.id}/clip.mp4", f"/alerts/{first.id}/clip.webm"):  # fmt: skip
            status, _, body = s.request("GET", path)
            assert status == 404 and b"secret" not in body and b"root:" not in body, path
    finally:
        s.stop()


def test_a_label_post_without_the_csrf_token_or_from_elsewhere_is_refused(
    server: Server, site: dict[str, Path]
) -> None:
    target = _stored(site["alerts"])[-1]
    path = f"/alerts/{target.id}/label"
    status, _, _ = server.request("POST", path, "verdict=true")
    assert status == 403
    status, _, _ = server.request("POST", path, "verdict=true&csrf=abc", {"Cookie": "h2a_csrf=xyz"})
    assert status == 403
    forged = {"Cookie": "h2a_csrf=abc", "Origin": "http://evil.example"}
    status, _, _ = server.request("POST", path, "verdict=true&csrf=abc", forged)
    assert status == 403
    assert _label(site["alerts"], target.id) is None
    status, _, _ = server.request("POST", path, "verdict=maybe&csrf=abc", {"Cookie": "h2a_csrf=abc"})
    assert status == 400
    status, headers, _ = server.request("POST", path, "verdict=true&csrf=abc", {"Cookie": "h2a_csrf=abc"})
    assert status == 303 and headers["location"] == f"/alerts/{target.id}"
    assert _label(site["alerts"], target.id) == "true"
    server.request("POST", path, "verdict=clear&csrf=abc", {"Cookie": "h2a_csrf=abc"})


def test_serve_refuses_a_folder_without_a_store_and_a_busy_port(
    site: dict[str, Path], tmp_path: Path
) -> None:
    result = run_cli("h2a.edge.alerts_cli", "--alerts", str(tmp_path / "none"), "serve", "--port", "0")
    assert result.returncode != 0 and "no alert store in" in result.stderr
    assert "Traceback" not in result.stderr
    s = Server(site["alerts"])
    try:
        busy = run_cli("h2a.edge.alerts_cli", "--alerts", str(site["alerts"]), "serve", "--port", str(s.port))
        assert busy.returncode != 0 and f"cannot listen on 127.0.0.1:{s.port}" in busy.stderr
    finally:
        s.stop()
    loose = tmp_path / "loose.token"
    loose.write_text("x" * 32)
    os.chmod(loose, 0o644)
    result = run_cli(
        "h2a.edge.alerts_cli", "--alerts", str(site["alerts"]), "serve", "--port", "0", "--host", "0.0.0.0",
        "--token-file", str(loose),
    )  # fmt: skip
    assert result.returncode != 0 and "readable by others" in result.stderr


def test_the_status_file_tells_running_stale_and_stopped_apart(tmp_path: Path) -> None:
    import json

    from h2a.edge.status_file import STATUS_NAME, read_status, write_status

    assert read_status(tmp_path) is None
    write_status(tmp_path, {"fps": 9.5}, running=True, every=2.0)
    assert _state(tmp_path) == "running"
    data = json.loads((tmp_path / STATUS_NAME).read_text())
    data["updated"] -= 7.0  # more than three status periods without a word: hung or killed
    (tmp_path / STATUS_NAME).write_text(json.dumps(data))
    assert _state(tmp_path) == "stale"
    write_status(tmp_path, {"fps": 9.5}, running=False, every=2.0)
    assert _state(tmp_path) == "stopped"
    (tmp_path / STATUS_NAME).write_text("{half")
    assert read_status(tmp_path) is None


def test_the_review_bench_runs() -> None:
    result = run_cli("h2a.edge.review_bench", "--alerts", "20", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    assert "clip as WebM, first request (transcode)" in result.stdout and "list, newest 50" in result.stdout


def test_the_status_panel_shows_the_outbox_backlog_only_when_forwarding(
    site: dict[str, Path], tmp_path: Path
) -> None:
    from h2a.edge.review_app import status_view
    from h2a.edge.status_file import write_status

    copy = tmp_path / "alerts"
    shutil.copytree(site["alerts"], copy)
    write_status(copy, {"fps": 9.5}, running=True, every=10.0)
    assert "forwarding backlog" not in dict(status_view(copy)["rows"])
    write_status(copy, {"fps": 9.5, "forwarding": True}, running=True, every=10.0)
    store = AlertStore(copy, readonly=True)
    owed = store.backlog()
    store.close()
    view = status_view(copy)
    assert view["state"] == "running" and dict(view["rows"])["forwarding backlog"] == str(owed)
    assert owed > 0  # edge-run without a broker still numbers every change for the outbox
