"""`edge-alerts serve`: bind, decide whether a token is needed, and run the review page on uvicorn.

The socket is bound here, before uvicorn starts, so a busy port or an address the box does not
have is one clear error line instead of a server log, and `--port 0` (a free port, for tests)
prints the port it got.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from h2a.edge.alert_store import DB_NAME
from h2a.edge.review_security import TOKEN_FILE, is_loopback, load_or_create_token
from h2a.runtime.cli import require
from h2a.runtime.errors import InputError

PURPOSE = "the review page (edge-alerts serve)"


@dataclass(frozen=True)
class ServeOptions:
    alerts: Path
    host: str = "127.0.0.1"
    port: int = 8080
    reports: Path | None = None  # default <alerts>/reports
    token_file: Path | None = None  # default <alerts>/review.token
    require_token: bool = False  # also on loopback (a shared box)


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise InputError(f"--host {host}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(64)
    return sock


def serve(options: ServeOptions) -> None:
    uvicorn = require("uvicorn", "cpu", PURPOSE)
    require("starlette", "cpu", PURPOSE)
    require("jinja2", "cpu", PURPOSE)
    from h2a.edge.review_app import ReviewSettings, make_app

    if not (options.alerts / DB_NAME).is_file():
        raise InputError(f"no alert store in {options.alerts} (edge-run --alerts {options.alerts} makes one)")
    token = None
    token_file = options.token_file or options.alerts / TOKEN_FILE
    open_page = is_loopback(options.host) and not options.require_token
    if not open_page:
        token, made = load_or_create_token(token_file)
    sock = bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if token is None:
        print(f"review page: {url} (loopback only; --host ADDRESS to reach it from the network)", flush=True)
    elif made:
        print(f"review page: {url}?token={token}", flush=True)
        print(f"new access token written to {token_file} (mode 600); the link above carries it", flush=True)
    else:
        print(f"review page: {url} (token in {token_file}: open {url}?token=<token>)", flush=True)
    settings = ReviewSettings(options.alerts, options.reports or options.alerts / "reports", token)
    config = uvicorn.Config(make_app(settings), log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
