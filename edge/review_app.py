"""The review page (`edge-alerts serve`): a small Starlette app over the alert store.

Server-rendered HTML (Jinja2, autoescaped), one static script that refreshes the status panel, and
read-only SQLite beside the running writer (WAL), opened per request so no connection is shared
between threads. Labels are written through `AlertStore(labeller=True)`, the same path as
`edge-alerts label`, so `edge-tune sweep --alerts` sees them. Files are looked up by alert id (or a
report plot's number), never by a path from the request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from h2a.edge import review_security as sec
from h2a.edge.alert_store import AlertFilter, AlertStore, StoreError
from h2a.edge.alerts import LABELS, Alert
from h2a.edge.review_media import MediaCache, clip_path, snapshot_path
from h2a.edge.status_file import read_status
from h2a.edge.tune_report import latest_report, report_fragment, report_images

HERE = Path(__file__).parent
STATIC = {  # the only static files there are
    "review.css": ("text/css", HERE / "review_static" / "review.css"),
    "review.js": ("text/javascript", HERE / "review_static" / "review.js"),
}
PAGE_SIZE = 50
MEDIA_TYPES = {"image/jpeg", "image/png", "video/webm", "video/mp4"}
MEDIA_CACHE = "private, max-age=60"  # a re-captioned alert's new snapshot shows within a minute
MAX_FORM_BYTES = 4096
MAX_NOTE_CHARS = 200
#: Status fields shown in the panel, in this order, with their labels.
STATUS_FIELDS = (
    ("fps", "frames/s"),
    ("detect_p50_ms", "detect p50 ms"),
    ("detect_p95_ms", "detect p95 ms"),
    ("caption_p50_ms", "caption p50 ms"),
    ("caption_p95_ms", "caption p95 ms"),
    ("frames_processed", "frames processed"),
    ("frames_dropped", "frames dropped"),
    ("captions_dropped", "captions dropped"),
    ("caption_queue", "caption queue"),
    ("reconnects", "reconnects"),
    ("freezes", "watchdog trips"),
    ("alerts_written", "alerts written"),
    ("alerts_forwarded", "alerts forwarded"),
)


@dataclass(frozen=True)
class ReviewSettings:
    alerts: Path
    reports: Path
    token: str | None  # None: open (loopback)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _day(text: str, key: str, errors: list[str]) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").timestamp()
    except ValueError:
        errors.append(f"{key}: {text!r} is not a date (YYYY-MM-DD)")
        return None


def status_view(folder: Path) -> dict[str, Any]:
    """What the status panel shows: edge-run's last status and the outbox backlog, as strings."""
    status = read_status(folder)
    rows: list[tuple[str, str]] = []
    if status is not None:
        for key, label in STATUS_FIELDS:
            if key in status:
                value = status[key]
                rows.append((label, f"{value:.1f}" if isinstance(value, float) else str(value)))
    state = "no status yet" if status is None else status["state"]
    if status is not None and status.get("forwarding"):
        try:  # the outbox: rows the broker has not acknowledged yet
            store = AlertStore(folder, readonly=True)
            try:
                rows.append(("forwarding backlog", str(store.backlog())))
            finally:
                store.close()
        except StoreError:
            pass
    return {
        "state": state,
        "age": None if status is None else f"{status['age']:.0f} s ago",
        "camera": None if status is None else status.get("camera"),
        "config_version": None if status is None else status.get("config_version"),
        "rows": rows,
    }


class ReviewApp:
    def __init__(self, settings: ReviewSettings) -> None:
        self.settings = settings
        self.access = sec.Access(settings.token)
        self.media = MediaCache()
        self.env = Environment(
            loader=FileSystemLoader(HERE / "review_templates"),
            autoescape=select_autoescape(["html"]),
        )
        self.env.filters["when"] = _when

    def store(self) -> AlertStore:
        return AlertStore(self.settings.alerts, readonly=True)

    def page(self, request: Request, template: str, code: int = 200, **values: Any) -> HTMLResponse:
        csrf = request.cookies.get(sec.CSRF_COOKIE) or sec.new_csrf()
        body = self.env.get_template(template).render(
            csrf=csrf, csrf_field=sec.CSRF_FIELD, folder=str(self.settings.alerts), **values
        )
        response = HTMLResponse(body, status_code=code)
        if request.cookies.get(sec.CSRF_COOKIE) != csrf:
            response.set_cookie(sec.CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    # ---- pages -----------------------------------------------------------------------------------
    def list_alerts(self, request: Request) -> Response:
        q = request.query_params
        errors: list[str] = []
        since = _day(q.get("since", ""), "since", errors)
        until = _day(q.get("until", ""), "until", errors)
        label = q.get("label", "")
        if label not in ("", "none", *LABELS):
            errors.append(f"label: {label!r} is not one of any, none, {', '.join(LABELS)}")
            label = ""
        where = AlertFilter(
            anomaly=q.get("type", ""),
            camera=q.get("camera", ""),
            since=since,
            until=None if until is None else (datetime.fromtimestamp(until) + timedelta(days=1)).timestamp(),
            label=label,
        )
        try:
            number = max(1, int(q.get("page", "1")))
        except ValueError:
            number = 1
        store = self.store()
        try:
            alerts, total = store.search(where, PAGE_SIZE, (number - 1) * PAGE_SIZE)
            menus = {"type": store.distinct("anomaly"), "camera": store.distinct("camera")}
            count = store.count()
        finally:
            store.close()
        keep = {k: v for k, v in q.items() if k != "page" and v}
        pages = max(1, -(-total // PAGE_SIZE))
        return self.page(
            request,
            "list.html",
            alerts=alerts,
            total=total,
            count=count,
            menus=menus,
            labels=LABELS,
            query=keep,
            errors=errors,
            number=number,
            pages=pages,
            prev_link=f"?{urlencode({**keep, 'page': number - 1})}" if number > 1 else None,
            next_link=f"?{urlencode({**keep, 'page': number + 1})}" if number < pages else None,
            status=status_view(self.settings.alerts),
        )

    def _alert(self, request: Request) -> Alert | None:
        store = self.store()
        try:
            return store.get(int(request.path_params["alert_id"]))
        finally:
            store.close()

    def show_alert(self, request: Request) -> Response:
        alert = self._alert(request)
        if alert is None:
            return self.page(request, "missing.html", 404, what=f"alert {request.path_params['alert_id']}")
        folder = self.settings.alerts
        return self.page(
            request,
            "alert.html",
            alert=alert,
            labels=LABELS,
            has_snapshot=snapshot_path(folder, alert) is not None,
            has_clip=clip_path(folder, alert) is not None,
        )

    async def label_alert(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return PlainTextResponse("form too large", 413)
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if not sec.csrf_matches(request.cookies.get(sec.CSRF_COOKIE), form.get(sec.CSRF_FIELD)):
            return PlainTextResponse("missing or wrong CSRF token: reload the page and try again", 403)
        return await run_in_threadpool(self._label, request, form)

    def _label(self, request: Request, form: dict[str, str]) -> Response:
        alert_id = int(request.path_params["alert_id"])
        verdict = form.get("verdict", "")
        if verdict not in (*LABELS, "clear"):
            return PlainTextResponse(f"verdict must be one of {', '.join(LABELS)}, clear", 400)
        note = form.get("note", "").strip()[:MAX_NOTE_CHARS] or None
        store = AlertStore(self.settings.alerts, labeller=True)
        try:
            found = store.set_label(alert_id, None if verdict == "clear" else verdict, note)
        finally:
            store.close()
        if not found:
            return self.page(request, "missing.html", 404, what=f"alert {alert_id}")
        return RedirectResponse(f"/alerts/{alert_id}", status_code=303)

    def report(self, request: Request) -> Response:
        folder = latest_report(self.settings.reports)
        if folder is None:
            return self.page(request, "report.html", report=None, reports=str(self.settings.reports))
        text = (folder / "report.md").read_text() if (folder / "report.md").is_file() else ""
        images = [p.relative_to(folder).as_posix() for p in report_images(folder)]
        return self.page(
            request,
            "report.html",
            report=Markup(report_fragment(text)),
            images=list(enumerate(images)),
            where=str(folder),
            made=_when((folder / "report.json").stat().st_mtime),
            reports=str(self.settings.reports),
        )

    # ---- files -----------------------------------------------------------------------------------
    def _file(self, request: Request, find: Callable[[Path, Alert], Path | None]) -> Path | None:
        alert = self._alert(request)
        return None if alert is None else find(self.settings.alerts, alert)

    def snapshot(self, request: Request) -> Response:
        path = self._file(request, snapshot_path)
        return (
            PlainTextResponse("no such snapshot", 404)
            if path is None
            else FileResponse(path, media_type="image/jpeg")
        )

    def thumbnail(self, request: Request) -> Response:
        path = self._file(request, snapshot_path)
        if path is None:
            return PlainTextResponse("no such snapshot", 404)
        return Response(self.media.thumbnail(path), media_type="image/jpeg")

    def web_clip(self, request: Request) -> Response:
        """The evidence clip as WebM, which the page's <video> plays (transcoded once, then cached)."""
        path = self._file(request, clip_path)
        if path is None:
            return PlainTextResponse("no such clip", 404)
        return FileResponse(self.media.web_clip(path), media_type="video/webm")

    def original_clip(self, request: Request) -> Response:
        path = self._file(request, clip_path)
        if path is None:
            return PlainTextResponse("no such clip", 404)
        name = f"alert-{request.path_params['alert_id']}.mp4"
        return FileResponse(path, media_type="video/mp4", filename=name)

    def plot(self, request: Request) -> Response:
        folder = latest_report(self.settings.reports)
        images = [] if folder is None else report_images(folder)
        n = int(request.path_params["n"])
        if not 0 <= n < len(images):
            return PlainTextResponse("no such plot", 404)
        return FileResponse(images[n], media_type="image/png")

    def status(self, request: Request) -> Response:
        return JSONResponse(status_view(self.settings.alerts))

    def static(self, request: Request) -> Response:
        entry = STATIC.get(request.path_params["name"])
        if entry is None:
            return PlainTextResponse("not found", 404)
        return FileResponse(entry[1], media_type=entry[0])


def _denied(request: Request) -> Response:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Token required</title>"
        "<link rel='stylesheet' href='/static/review.css'></head><body><main><h1>Token required</h1>"
        "<p>This review page is reachable beyond this box, so it asks for its access token: open the "
        "link <code>edge-alerts serve</code> printed, or add <code>?token=…</code> from the token file."
        "</p></main></body></html>"
    )
    return HTMLResponse(body, status_code=401)


class Guard(BaseHTTPMiddleware):
    """Token check, CSRF and origin check for POSTs, and the security headers on every response."""

    def __init__(self, app: Any, review: ReviewApp) -> None:
        super().__init__(app)
        self.review = review

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await self._checked(request, call_next)
        for key, value in sec.SECURITY_HEADERS.items():
            response.headers[key] = value
        if response.media_type in MEDIA_TYPES:  # pictures and clips: a short private cache
            response.headers["cache-control"] = MEDIA_CACHE
        return response

    async def _checked(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        access = self.review.access
        offered = request.query_params.get("token")
        if offered is not None and request.method == "GET":
            if not access.accepts_query_token(offered):
                return _denied(request)
            rest = {k: v for k, v in request.query_params.items() if k != "token"}
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            assert access.session is not None
            response.set_cookie(sec.SESSION_COOKIE, access.session, httponly=True, samesite="strict")
            return response
        auth = request.headers.get("authorization", "")
        bearer = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if request.url.path != "/static/review.css" and not access.allows(
            bearer, request.cookies.get(sec.SESSION_COOKIE)
        ):
            return _denied(request)
        if request.method == "POST" and not sec.same_origin(
            request.headers.get("origin"), request.headers.get("host")
        ):
            return PlainTextResponse("cross-origin request refused", 403)
        return await call_next(request)


def make_app(settings: ReviewSettings) -> Starlette:
    review = ReviewApp(settings)
    routes = [
        Route("/", review.list_alerts),
        Route("/alerts/{alert_id:int}", review.show_alert),
        Route("/alerts/{alert_id:int}/label", review.label_alert, methods=["POST"]),
        Route("/alerts/{alert_id:int}/snapshot.jpg", review.snapshot),
        Route("/alerts/{alert_id:int}/thumb.jpg", review.thumbnail),
        Route("/alerts/{alert_id:int}/clip.webm", review.web_clip),
        Route("/alerts/{alert_id:int}/clip.mp4", review.original_clip),
        Route("/report", review.report),
        Route("/report/plot/{n:int}", review.plot),
        Route("/api/status", review.status),
        Route("/static/{name}", review.static),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            review.media.close()

    return Starlette(routes=routes, middleware=[Middleware(Guard, review=review)], lifespan=lifespan)
