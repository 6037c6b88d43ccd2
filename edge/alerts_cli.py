"""`edge-alerts --alerts DIR list|show ID|label ID true|false|export --jsonl FILE|serve|health`:
look at alerts on the device, and mark them true or false alarms (evidence `edge-tune sweep
--alerts` reads), in the terminal or on the review page (`serve`); `health` answers a container's
health check from the running edge-run's status file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from h2a.edge.alert_store import AlertStore
from h2a.edge.alerts import LABELS, Alert
from h2a.edge.health import DEFAULT_MAX_FRAME_AGE_S, check_health
from h2a.runtime.cli import run_main
from h2a.runtime.errors import EXIT_FAILURE, EXIT_OK, InputError


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _line(a: Alert) -> str:
    head = f"{a.id:>5}  {_when(a.start_time)}  {a.camera:<10} {a.anomaly:<13} {a.peak_score:5.2f}"
    head += f" {a.label or '-':>5}"
    return f"{head}  {a.caption[:70]}"


def _show(a: Alert, folder: Path) -> str:
    rows = [
        f"alert {a.id} ({a.uid})",
        f"camera      {a.camera}",
        f"anomaly     {a.anomaly}, peak {a.peak_score:.3f} at {_when(a.peak_time)}",
        f"time        {_when(a.start_time)} -> {_when(a.end_time)}",
        f"position    {_seconds(a.start_position)} -> {_seconds(a.end_position)} into the source",
        f"What:       {a.what}",
        f"Who:        {a.who}",
        f"Where:      {a.location}",
        f"Caption:    {a.caption}",
        f"zones       {', '.join(a.zones) or '-'}",
        f"source      {a.source or '-'}",
        f"label       {a.label or '-'}{f' ({a.label_note})' if a.label_note else ''}",
        "triplets:",
    ]
    for t in a.triplets:
        rows.append(
            f"  {t['subject']} {t['action']} {t['object']} ({t['score']:.2f}) "
            f"subject {t['subject_box']} object {t['object_box']}"
        )
    rows += [
        f"snapshot    {folder / a.snapshot if a.snapshot else '-'}",
        f"clip        {folder / a.clip if a.clip else '-'}",
        f"model       {a.model_sha256[:16]}, config {a.config_version}",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge-alerts", description="List, show, label or export stored alerts.")
    p.add_argument(
        "--alerts", type=Path, default=Path("alerts"), help="alert store folder (default ./alerts)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="newest alerts first")
    ls.add_argument("--limit", type=int, default=50)
    show = sub.add_parser("show", help="one alert in full")
    show.add_argument("id", type=int)
    label = sub.add_parser("label", help="mark an alert a true or a false alarm (evidence for edge-tune)")
    label.add_argument("id", type=int)
    label.add_argument("verdict", choices=(*LABELS, "clear"), help="true, false, or clear to remove it")
    label.add_argument("--note", help="why, in a few words")
    export = sub.add_parser("export", help="all alerts as JSON lines (for log shippers)")
    export.add_argument("--jsonl", type=Path, required=True, help="file to write, or - for stdout")
    serve = sub.add_parser("serve", help="the review page in a browser (loopback unless --host)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free one)")
    serve.add_argument("--reports", type=Path, help="where edge-tune sweep reports are (default DIR/reports)")
    serve.add_argument("--token-file", type=Path, help="the access token's file (default DIR/review.token)")
    serve.add_argument("--require-token", action="store_true", help="ask for the token on loopback too")
    health = sub.add_parser("health", help="exit 0 if edge-run runs and sees frames, else 1 (health checks)")
    health.add_argument(
        "--max-frame-age", type=float, default=DEFAULT_MAX_FRAME_AGE_S,
        help=f"seconds without a frame that count as unhealthy (default {DEFAULT_MAX_FRAME_AGE_S:.0f})",
    )  # fmt: skip
    args = p.parse_args(argv)
    return run_main("edge-alerts", lambda: COMMANDS[args.command](args))


def cmd_health(args: argparse.Namespace) -> int:
    result = check_health(args.alerts, args.max_frame_age)
    print(result.line)
    return EXIT_OK if result.healthy else EXIT_FAILURE


def cmd_list(args: argparse.Namespace) -> None:
    store = AlertStore(args.alerts, readonly=True)
    print(f"{'id':>5}  {'start':<19}  {'camera':<10} {'anomaly':<13} {'peak':>5} {'label':>5}  caption")
    for a in store.alerts(args.limit):
        print(_line(a))
    print(f"{store.count()} alerts in {args.alerts}")


def cmd_show(args: argparse.Namespace) -> None:
    alert = AlertStore(args.alerts, readonly=True).get(args.id)
    if alert is None:
        raise InputError(f"no alert {args.id} in {args.alerts}")
    print(_show(alert, args.alerts))


def cmd_export(args: argparse.Namespace) -> None:
    store = AlertStore(args.alerts, readonly=True)
    lines = [json.dumps(a.as_json()) for a in reversed(list(store.alerts()))]
    text = "\n".join(lines) + ("\n" if lines else "")
    if str(args.jsonl) == "-":
        sys.stdout.write(text)
    else:
        tmp = args.jsonl.with_name(args.jsonl.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.jsonl)
        print(f"wrote {len(lines)} alerts to {args.jsonl}")


def cmd_label(args: argparse.Namespace) -> None:
    store = AlertStore(args.alerts, labeller=True)
    verdict = None if args.verdict == "clear" else args.verdict
    if not store.set_label(args.id, verdict, args.note):
        raise InputError(f"no alert {args.id} in {args.alerts}")
    print(f"alert {args.id}: {'label cleared' if verdict is None else verdict + ' alarm'}")


def cmd_serve(args: argparse.Namespace) -> None:
    from h2a.edge.review_serve import ServeOptions, serve

    serve(ServeOptions(args.alerts, args.host, args.port, args.reports, args.token_file, args.require_token))


COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "health": cmd_health,
    "list": cmd_list,
    "label": cmd_label,
    "show": cmd_show,
    "export": cmd_export,
    "serve": cmd_serve,
}

if __name__ == "__main__":
    sys.exit(main())
