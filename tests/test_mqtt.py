"""MQTT forwarding against a real mosquitto broker on 127.0.0.1 (a free port, started and stopped
here): delivery in order, a broker that is away, `kill -9` mid-forward, a wrong password."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from h2a.edge.alert_store import AlertStore

from .conftest import run_cli
from .test_edge_run_events import flapping_config, noise_video

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)
PREFIX = "h2a/test-cam"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A real mosquitto on 127.0.0.1; `users` turns anonymous access off."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        self.port = free_port()
        # as root, mosquitto would switch to its own user, which cannot read pytest's private folders
        me = pwd.getpwuid(os.geteuid()).pw_name
        # persistence: a subscriber's session and its queued messages survive a broker restart
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {folder}/",
            f"user {me}",
        ]
        if users:
            pw = folder / "passwords"
            for i, (user, password) in enumerate(users.items()):
                cmd = ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, password]
                subprocess.run(cmd, check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


class Subscriber:
    """Collects every message under the test prefix, with QoS 1."""

    def __init__(self, port: int, user: tuple[str, str] | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber", clean_session=False
        )
        if user:
            self.client.username_pw_set(*user)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10)
        time.sleep(0.2)  # the SUBACK

    def _on_connect(self, client: Any, *_: Any) -> None:
        client.subscribe(f"{PREFIX}/#", qos=1)
        self.ready.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p in self.messages if t == f"{PREFIX}/alerts"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    yield b
    b.stop()


def forward_config(path: Path, port: int, flapping: Path | None, extra: str = "") -> Path:
    base = flapping.read_text() if flapping else "[defaults]\nenter = 1.0\nexit = 1.0\n"
    path.write_text(
        base + f'[camera]\nname = "test-cam"\n[forward.mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        "reconnect_min = 1\nreconnect_max = 2\n" + extra
    )
    return path


def edge_run(bundle: Path, video: Path, alerts: Path, config: Path) -> subprocess.CompletedProcess[str]:
    args = ["--engine", str(bundle), "--source", str(video), "--alerts", str(alerts), "--config", str(config)]
    return run_cli("h2a.edge.run_cli", *args, timeout=300)


def assert_in_order_and_complete(sub: Subscriber, alerts: Path) -> None:
    """Every stored alert arrived in its latest state; changes came in sequence order."""
    received = sub.alerts()
    seqs = [int(m["message_id"].rsplit("-", 1)[1]) for m in received]
    unique = list(dict.fromkeys(seqs))  # a resent duplicate is dropped by its message_id
    assert unique == sorted(unique)
    store = AlertStore(alerts, readonly=True)
    rows = list(store.alerts())
    assert rows and all(a.forwarded_seq == a.forward_seq for a in rows)
    ids = {m["message_id"] for m in received}
    assert {f"{a.uid}-{a.forward_seq}" for a in rows} <= ids
    assert all(m["schema"] == "h2a-alert" and m["alert"]["uid"] for m in received)


def test_every_alert_is_delivered_in_order(tiny_bundle: Path, tmp_path: Path, broker: Broker) -> None:
    broker.start()
    sub = Subscriber(broker.port)
    video = noise_video(tmp_path / "noise.avi", 150)
    config = forward_config(
        tmp_path / "edge.toml", broker.port, flapping_config(tiny_bundle, video, tmp_path / "f.toml", 150)
    )
    result = edge_run(tiny_bundle, video, tmp_path / "alerts", config)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    time.sleep(0.5)
    assert_in_order_and_complete(sub, tmp_path / "alerts")
    snapshots = [t for t, _ in sub.messages if t.startswith(f"{PREFIX}/snapshot/")]
    assert snapshots and all(p[:2] == b"\xff\xd8" for t, p in sub.messages if t in snapshots)
    assert (f"{PREFIX}/availability", b"offline") in sub.messages  # said on a clean stop
    sub.close()


def test_a_broker_restarted_mid_run_gets_everything_in_order(
    tiny_bundle: Path, tmp_path: Path, broker: Broker
) -> None:
    broker.start()
    sub = Subscriber(broker.port)
    video = noise_video(tmp_path / "long.avi", 1500)
    flap = flapping_config(tiny_bundle, video, tmp_path / "f.toml", 300)
    alerts = tmp_path / "alerts"
    config = forward_config(tmp_path / "edge.toml", broker.port, flap)
    cmd = [sys.executable, "-m", "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video)]
    proc = subprocess.Popen(
        [*cmd, "--alerts", str(alerts), "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while len(sub.alerts()) < 5 and time.time() < deadline:
        time.sleep(0.05)
    broker.stop()
    time.sleep(3)  # alerts pile up in the outbox meanwhile
    broker.start()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "event=mqtt_disconnected" in err and err.count("event=mqtt_connected") >= 2
    deadline = time.time() + 20
    while time.time() < deadline and len(sub.alerts()) < AlertStore(alerts, readonly=True).count():
        time.sleep(0.1)
    assert_in_order_and_complete(sub, alerts)
    sub.close()


def test_a_broker_that_is_away_gets_everything_after_the_next_start(
    tiny_bundle: Path, tmp_path: Path, broker: Broker
) -> None:
    video = noise_video(tmp_path / "noise.avi", 100)
    flap = flapping_config(tiny_bundle, video, tmp_path / "f.toml", 100)
    alerts = tmp_path / "alerts"
    away = edge_run(tiny_bundle, video, alerts, forward_config(tmp_path / "edge.toml", broker.port, flap))
    assert away.returncode == 0, away.stderr  # detection went on without the broker
    owed = AlertStore(alerts, readonly=True).count()
    assert owed > 0 and "event=mqtt_backlog" in away.stderr
    broker.start()
    sub = Subscriber(broker.port)
    quiet = noise_video(tmp_path / "short.avi", 5)
    again = edge_run(tiny_bundle, quiet, alerts, forward_config(tmp_path / "quiet.toml", broker.port, None))
    assert again.returncode == 0, again.stderr
    time.sleep(0.5)
    assert_in_order_and_complete(sub, alerts)
    assert len({m["alert"]["uid"] for m in sub.alerts()}) == owed
    sub.close()


def test_kill_9_mid_forward_loses_nothing(tiny_bundle: Path, tmp_path: Path, broker: Broker) -> None:
    broker.start()
    sub = Subscriber(broker.port)
    video = noise_video(tmp_path / "long.avi", 3000)
    flap = flapping_config(tiny_bundle, video, tmp_path / "f.toml", 300)
    alerts = tmp_path / "alerts"
    config = forward_config(tmp_path / "edge.toml", broker.port, flap)
    cmd = [sys.executable, "-m", "h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video)]
    proc = subprocess.Popen(
        [*cmd, "--alerts", str(alerts), "--config", str(config)], stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while len(sub.alerts()) < 10 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(sub.alerts()) >= 10
    quiet = noise_video(tmp_path / "short.avi", 5)
    again = edge_run(tiny_bundle, quiet, alerts, forward_config(tmp_path / "quiet.toml", broker.port, None))
    assert again.returncode == 0, again.stderr
    time.sleep(0.5)
    assert_in_order_and_complete(sub, alerts)
    sub.close()


def test_a_wrong_password_is_one_clear_line_and_detection_goes_on(tiny_bundle: Path, tmp_path: Path) -> None:
    secured = Broker(tmp_path, users={"cam": "right"})
    secured.start()
    try:
        video = noise_video(tmp_path / "noise.avi", 40)
        flap = flapping_config(tiny_bundle, video, tmp_path / "f.toml", 40)
        password = tmp_path / "mqtt.pass"
        password.write_text("wrong\n")
        extra = f'username = "cam"\npassword_file = "{password}"\n'
        config = forward_config(tmp_path / "edge.toml", secured.port, flap, extra)
        result = edge_run(tiny_bundle, video, tmp_path / "alerts", config)
        assert result.returncode == 0, result.stderr
        refused = [line for line in result.stderr.splitlines() if "event=mqtt_refused" in line]
        assert len(refused) == 1 and "reason=" in refused[0], result.stderr
        assert "frames_processed=40" in result.stderr
    finally:
        secured.stop()


def test_forward_bench_runs_against_a_real_broker(tiny_bundle: Path, broker: Broker) -> None:
    broker.start()
    result = run_cli(
        "h2a.edge.forward_bench", "--port", str(broker.port), "--alerts", "20", "--engine", str(tiny_bundle),
        "--frames", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "forwarded 20/20 alerts" in result.stdout and "while it drains" in result.stdout


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    new_key = ["-newkey", "rsa:2048", "-nodes"]
    run(
        "req",
        "-x509",
        *new_key,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "1",
        "-subj",
        "/CN=h2a test CA",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    signing = ["-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial"]
    run("x509", "-req", "-in", str(csr), *signing, "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_to_a_broker_with_its_own_ca(tiny_bundle: Path, tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    broker = Broker(tmp_path)
    with broker.conf.open("a") as conf:
        conf.write(f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    try:
        video = noise_video(tmp_path / "noise.avi", 40)
        flap = flapping_config(tiny_bundle, video, tmp_path / "f.toml", 40)
        config = forward_config(tmp_path / "edge.toml", broker.port, flap, f'tls = true\nca_file = "{ca}"\n')
        result = edge_run(tiny_bundle, video, tmp_path / "alerts", config)
        assert result.returncode == 0, result.stderr
        assert "event=mqtt_connected" in result.stderr
        rows = list(AlertStore(tmp_path / "alerts", readonly=True).alerts())
        assert rows and all(a.forwarded_seq == a.forward_seq for a in rows)  # acknowledged over TLS
    finally:
        broker.stop()
