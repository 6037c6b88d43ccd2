"""Who may use the review page, and what its responses allow a browser to do.

On a loopback address only the person at the box can reach the page, so it is open. Bound to any
other address it wants the access token: `?token=` once (the page then keeps a cookie derived from
it and redirects to drop the token from the address bar) or `Authorization: Bearer`. The token is
made on first start and kept in a 0600 file, so a restart does not change the bookmarked link.
Label changes are POSTs that must echo a per-browser CSRF cookie in a hidden field (double submit)
and, when the browser sends one, come from the page's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path

from h2a.runtime.errors import InputError

TOKEN_FILE = "review.token"
SESSION_COOKIE = "h2a_review"
CSRF_COOKIE = "h2a_csrf"
CSRF_FIELD = "csrf"
TOKEN_BYTES = 24
#: Every response: nothing from elsewhere, no inline script or style, no framing.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make browsers send `Origin: null` on POSTs
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """-> (token, made now). An existing file that others can read is refused, not trusted."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise InputError(
                f"{path} is readable by others (mode {mode:o}): chmod 600 it, or delete it for a new token"
            ) from None
        token = path.read_text().strip()
        if len(token) < 16:
            raise InputError(f"{path} holds no usable token: delete it and a new one is made") from None
        return token, False
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


class Access:
    """The token check; `token` None means the page is open (loopback)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.session = (
            None
            if token is None
            else hmac.new(token.encode(), b"h2a-review-session", hashlib.sha256).hexdigest()
        )

    def allows(self, bearer: str | None, cookie: str | None) -> bool:
        if self.token is None:
            return True
        if bearer is not None and hmac.compare_digest(bearer.encode(), self.token.encode()):
            return True
        assert self.session is not None
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode())

    def accepts_query_token(self, value: str) -> bool:
        return self.token is not None and hmac.compare_digest(value.encode(), self.token.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(16)


def csrf_matches(cookie: str | None, field: str | None) -> bool:
    return bool(cookie) and bool(field) and hmac.compare_digest(str(cookie).encode(), str(field).encode())


def same_origin(origin: str | None, host: str | None) -> bool:
    """A browser's Origin header names the page's own host (absent: not a browser POST, allowed)."""
    if origin is None:
        return True
    return host is not None and origin.split("://", 1)[-1] == host
