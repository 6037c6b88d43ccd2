"""systemd's notify protocol, without a dependency: a datagram to $NOTIFY_SOCKET.

Under `Type=notify` systemd waits for READY=1 before it counts the service as started, and with
`WatchdogSec=` it restarts a process that stops sending WATCHDOG=1: a process alive but stuck.
Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time

#: Ping at this fraction of systemd's watchdog period (systemd's own advice: half).
PING_FRACTION = 0.5


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address  # abstract socket
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.ping_every = (
            int(usec) / 1e6 * PING_FRACTION if usec.isdigit() and int(usec) > 0 and mine else None
        )
        self._last_ping = 0.0

    @property
    def active(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(message.encode(), self.address)
            except OSError:
                return False  # systemd went away (shutdown): nothing to tell
        return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        """Called from the detection loop each time round; sends at most every `ping_every` s."""
        if self.ping_every is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.ping_every:
            self._last_ping = now
            self.send("WATCHDOG=1")
