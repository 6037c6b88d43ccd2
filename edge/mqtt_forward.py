"""The MQTT forwarder: alerts leave the box through a real broker, store-and-forward.

The alert store is the outbox (`AlertStore.pending`): every new alert and every change of one
(a re-caption at a new peak, its end) has a sequence number, and this thread publishes them in
that order with QoS 1, one at a time, marking each forwarded only when the broker acknowledged it
(PUBACK). While the broker is away it waits and retries with back-off; detection never waits on
it. After a restart it carries on from what the store still owes. A message is never marked
forwarded before it was acknowledged, so a crash can repeat one: each message carries a stable
`message_id` (`<uid>-<seq>`) by which subscribers drop duplicates.

Topics under the prefix (default `h2a/<camera>`):
- `<prefix>/alerts`: the alert as JSON (`edge-alerts export`'s fields, plus `schema`, `kind`
  new|update and `message_id`), QoS 1;
- `<prefix>/snapshot/<uid>`: the snapshot JPEG, QoS 1, before the JSON that names it;
- `<prefix>/availability`: `online` / `offline`, retained, `offline` also as the last will.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import ssl
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from h2a.edge.alert_store import DB_NAME, AlertStore, StoreError
from h2a.edge.alerts import Alert
from h2a.edge.config import MqttConfig
from h2a.edge.telemetry import Stats, log_event
from h2a.runtime.errors import InputError

PAYLOAD_SCHEMA = "h2a-alert"
PAYLOAD_VERSION = 1
QOS = 1
#: Changes read from the store per round.
BATCH = 32
#: How long one publish may wait for its acknowledgement before the round is retried.
ACK_TIMEOUT_S = 10.0
#: How often an idle forwarder looks at the store (and at its stop flag).
POLL_S = 0.2
#: Local fields subscribers have no use for.
LOCAL_FIELDS = ("forward_seq", "forwarded_seq", "snapshot", "clip")


def read_password(config: MqttConfig) -> str | None:
    if not config.password_file:
        return None
    try:
        return Path(config.password_file).read_text().strip()
    except OSError as err:
        raise InputError(f"forward.mqtt.password_file {config.password_file}: {err.strerror}") from None


def payload(alert: Alert) -> dict[str, Any]:
    body = {k: v for k, v in asdict(alert).items() if k not in LOCAL_FIELDS}
    return {
        "schema": PAYLOAD_SCHEMA,
        "version": PAYLOAD_VERSION,
        "message_id": f"{alert.uid}-{alert.forward_seq}",
        "kind": "new" if alert.forwarded_seq == 0 else "update",
        "alert": body,
    }


class MqttForwarder:
    """One thread: `run()` until `stop` is set, then up to `drain_s` more to send what is owed."""

    def __init__(
        self, folder: Path, config: MqttConfig, camera: str, stats: Stats, drain_s: float = 5.0
    ) -> None:
        import paho.mqtt.client as mqtt

        self.folder, self.config, self.stats, self.drain_s = folder, config, stats, drain_s
        self.prefix = config.topic_prefix or f"h2a/{camera}"
        self.availability = f"{self.prefix}/availability"
        self.stop = threading.Event()
        self._connected = threading.Event()
        self._refused: str | None = None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id or f"h2a-{camera}")
        if config.username:
            client.username_pw_set(config.username, read_password(config))
        if config.tls:
            client.tls_set(
                ca_certs=config.ca_file or None,
                certfile=config.cert_file or None,
                keyfile=config.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.will_set(self.availability, "offline", qos=QOS, retain=True)
        client.reconnect_delay_set(int(max(1, config.reconnect_min)), int(max(1, config.reconnect_max)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self.client = client

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            text = str(reason)
            if text != self._refused:  # one line per cause, not one per retry
                log_event("mqtt_refused", logging.ERROR, broker=self._where(), reason=text)
            self._refused = text
            self.stats.count("mqtt_refused")
            return
        self._refused = None
        client.publish(self.availability, "online", qos=QOS, retain=True)
        self._connected.set()
        log_event("mqtt_connected", broker=self._where(), prefix=self.prefix)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if self._connected.is_set() and not self.stop.is_set():  # our own hang-up at the end is no news
            log_event("mqtt_disconnected", logging.WARNING, broker=self._where(), reason=str(reason))
        self._connected.clear()

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def run(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        self.client.loop_start()
        store: AlertStore | None = None
        deadline: float | None = None
        try:
            while True:
                if self.stop.is_set() and deadline is None:
                    deadline = time.monotonic() + self.drain_s
                if deadline is not None and time.monotonic() > deadline:
                    break
                if store is None and (self.folder / DB_NAME).is_file():
                    try:
                        store = AlertStore(self.folder, labeller=True)
                    except StoreError:  # the writer is still creating it: next round
                        store = None
                try:
                    sent = self._round(store) if store is not None and self._connected.is_set() else 0
                except (OSError, sqlite3.Error) as err:  # a locked or full store: log, wait, retry
                    log_event("mqtt_forward_failed", logging.ERROR, error=str(err))
                    sent = 0
                if sent == 0:
                    if deadline is not None and (store is None or store.backlog() == 0):
                        break
                    time.sleep(POLL_S)
        finally:
            if self._connected.is_set():
                self.client.publish(self.availability, "offline", qos=QOS, retain=True).wait_for_publish(
                    ACK_TIMEOUT_S
                )
            self.client.disconnect()
            self.client.loop_stop()
            if store is not None:
                backlog = store.backlog()
                if backlog:
                    log_event(
                        "mqtt_backlog", logging.WARNING, owed=backlog, note="forwarded after the next start"
                    )
                store.close()

    def _round(self, store: AlertStore) -> int:
        """Publish what is owed, in order; -> changes acknowledged (0 when none or on a failure)."""
        sent = 0
        for alert in store.pending(BATCH):
            if alert.snapshot and alert.forwarded_seq == 0:
                try:
                    jpeg = (self.folder / alert.snapshot).read_bytes()
                except FileNotFoundError:
                    current = store.get(alert.id) if alert.id is not None else None
                    if current is not None and current.snapshot != alert.snapshot:
                        return sent  # a re-caption replaced it since: read the row again next round
                    jpeg = b""  # gone for good (removed by hand): the alert goes without it
                if jpeg and not self._publish(f"{self.prefix}/snapshot/{alert.uid}", jpeg):
                    return sent
            if not self._publish(f"{self.prefix}/alerts", json.dumps(payload(alert)).encode("utf-8")):
                return sent
            store.mark_forwarded(alert.uid, alert.forward_seq)
            self.stats.count("alerts_forwarded")
            sent += 1
        return sent

    def _publish(self, topic: str, data: bytes) -> bool:
        info = self.client.publish(topic, data, qos=QOS)
        try:
            info.wait_for_publish(ACK_TIMEOUT_S)
        except (RuntimeError, ValueError):  # not queued: the connection went away
            return False
        return info.is_published()
