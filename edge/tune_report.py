"""The report of `edge-tune sweep`: JSON for tools, Markdown and HTML for people, PNG plots.

Plots: per anomaly type, false alarms per hour against recall over the whole grid (the chosen
operating point marked); per clip, every type's score over time with the chosen enter/exit
thresholds and the labelled intervals. Plots need matplotlib (the `[tune]` extra).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from h2a.edge.score_cache import ScoreCache
from h2a.edge.sweep import Outcome
from h2a.runtime.cli import require
from h2a.runtime.labels import LabelledEvent

#: At most this many per-clip timelines are drawn (the first clips, in replay order).
MAX_TIMELINES = 40
PLOT_DPI = 100
FRONTIER_ROWS = 8  # rows of each type's table in the Markdown/HTML report
STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
    "td,th{border:1px solid #ccc;padding:2px 8px}"
)


@dataclass(frozen=True)
class TypeResult:
    anomaly: str
    chosen: Outcome
    target_met: bool
    outcomes: list[Outcome]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def outcome_json(o: Outcome) -> dict[str, Any]:
    return {
        **asdict(o.setting),
        "alarms": o.alarms,
        "caught": o.caught,
        "missed": o.missed,
        "false_alarms": o.false_alarms,
        "fa_per_hour": o.fa_per_hour,
        "recall": o.recall,
        "precision": o.precision,
    }


def frontier(outcomes: list[Outcome]) -> list[Outcome]:
    """The settings no other setting beats on both recall and false alarms, fewest alarms first."""
    ranked = sorted(outcomes, key=lambda o: (o.fa_per_hour, -(o.recall or 0.0)))
    out: list[Outcome] = []
    best_recall = -1.0
    for o in ranked:
        if (o.recall or 0.0) > best_recall:
            out.append(o)
            best_recall = o.recall or 0.0
    return out


def markdown(results: list[TypeResult], target: float, hours: float, clips: int) -> str:
    lines = [
        "# edge-tune sweep",
        "",
        f"{clips} clips, {hours:.2f} labelled hours, target {target:g} false alarms per hour.",
        "",
        "| type | enter | exit | min duration | caught | missed | false alarms / h | recall | precision "
        "| target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o, s = r.chosen, r.chosen.setting
        met = "met" if r.target_met else "NOT met"
        lines.append(
            f"| {r.anomaly} | {s.enter:.2f} | {s.exit:.2f} | {s.min_duration:g} s | {o.caught} | "
            f"{o.missed} | {o.fa_per_hour:.2f} | {_fmt(o.recall)} | {_fmt(o.precision)} | {met} |"
        )
    for r in results:
        lines += [
            "",
            f"## {r.anomaly}: the trade-off (settings no other setting beats)",
            "",
            "| enter | exit | min duration | false alarms / h | recall |",
            "|---|---|---|---|---|",
        ]
        for o in frontier(r.outcomes)[:FRONTIER_ROWS]:
            s = o.setting
            lines.append(
                f"| {s.enter:.2f} | {s.exit:.2f} | {s.min_duration:g} s | {o.fa_per_hour:.2f} "
                f"| {_fmt(o.recall)} |"
            )
    return "\n".join(lines) + "\n"


def write_report(
    out: Path,
    results: list[TypeResult],
    cache: ScoreCache,
    labels: dict[str, list[LabelledEvent]],
    target: float,
    hours: float,
    plots: bool,
) -> list[Path]:
    """Writes report.json, report.md, report.html and (with `plots`) PNGs; -> the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    data = {
        "target_fa_per_hour": target,
        "labelled_hours": hours,
        "clips": [c.clip for c in cache.clips],
        "types": {
            r.anomaly: {
                "chosen": outcome_json(r.chosen),
                "target_met": r.target_met,
                "grid": [outcome_json(o) for o in r.outcomes],
            }
            for r in results
        },
    }
    (out / "report.json").write_text(json.dumps(data, indent=1))
    text = markdown(results, target, hours, len(cache.clips))
    (out / "report.md").write_text(text)
    written += [out / "report.json", out / "report.md"]
    images: list[Path] = []
    if plots:
        images = plot_tradeoffs(out, results) + plot_timelines(out, results, cache, labels)
    (out / "report.html").write_text(_html(text, images, out))
    written.append(out / "report.html")
    return written + images


def report_fragment(markdown_text: str) -> str:
    """The report's Markdown (headings, paragraphs, tables) as an HTML fragment, all text escaped;
    the report file and the review page (`edge-alerts serve`) both show it."""
    body: list[str] = []
    table: list[list[str]] = []
    for line in [*markdown_text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        if table:
            head, *rows = table
            body.append(
                "<table><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
                + "</table>"
            )
            table = []
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    return "".join(body)


def report_images(folder: Path) -> list[Path]:
    """A report's plots in a stable order: trade-offs first, then the clips' timelines."""
    return sorted(folder.glob("*.png")) + sorted(folder.glob("*/*.png"))


def latest_report(folder: Path) -> Path | None:
    """The newest report among `folder` itself and its sub-folders (one per sweep), if any."""
    found = [p.parent for p in (*folder.glob("report.json"), *folder.glob("*/report.json")) if p.is_file()]
    return max(found, key=lambda p: (p / "report.json").stat().st_mtime) if found else None


def _html(markdown_text: str, images: list[Path], folder: Path) -> str:
    """The Markdown tables as HTML tables, then the plots; no script, no external resource."""
    body = [report_fragment(markdown_text)]
    for image in images:
        name = html.escape(image.relative_to(folder).as_posix())
        body.append(f'<figure><img src="{name}" alt="{name}"><figcaption>{name}</figcaption></figure>')
    meta = f"<meta charset='utf-8'><title>edge-tune sweep</title><style>{STYLE}</style>"
    return f"<!doctype html><html><head>{meta}</head><body>{''.join(body)}</body></html>\n"


def _pyplot() -> Any:
    require("matplotlib", "tune", "edge-tune's plots (or pass --no-plots)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
    return path


def plot_tradeoffs(out: Path, results: list[TypeResult]) -> list[Path]:
    plt = _pyplot()
    written = []
    for r in results:
        fig, ax = plt.subplots(figsize=(5, 4))
        fa = [o.fa_per_hour for o in r.outcomes]
        recall = [o.recall or 0.0 for o in r.outcomes]
        ax.scatter(fa, recall, s=10, alpha=0.5, label="grid")
        front = frontier(r.outcomes)
        ax.plot([o.fa_per_hour for o in front], [o.recall or 0.0 for o in front], "-", label="trade-off")
        ax.scatter(
            [r.chosen.fa_per_hour], [r.chosen.recall or 0.0], s=80, marker="*", color="red", label="chosen"
        )
        ax.set_xlabel("false alarms per hour")
        ax.set_ylabel("recall")
        ax.set_title(r.anomaly)
        ax.legend(loc="lower right")
        written.append(_save(plt, fig, out / f"tradeoff_{r.anomaly.replace(' ', '_')}.png"))
    return written


def plot_timelines(
    out: Path, results: list[TypeResult], cache: ScoreCache, labels: dict[str, list[LabelledEvent]]
) -> list[Path]:
    plt = _pyplot()
    folder = out / "timelines"
    folder.mkdir(exist_ok=True)
    types = cache.header.anomalies
    chosen = {r.anomaly: r.chosen.setting for r in results}
    written = []
    for i, clip in enumerate(cache.clips[:MAX_TIMELINES]):
        fig, ax = plt.subplots(figsize=(8, 3))
        for lab in labels.get(clip.clip, []):
            ax.axvspan(lab.start, lab.end, color="orange", alpha=0.25)
            ax.text(lab.start, 1.01, lab.type, fontsize=7)
        for k, name in enumerate(types):
            (line,) = ax.plot(clip.positions, clip.probs[:, k], lw=1, label=name)
            if name in chosen and any(lab.type == name for lab in labels.get(clip.clip, [])):
                ax.axhline(chosen[name].enter, color=line.get_color(), ls="--", lw=0.8)
                ax.axhline(chosen[name].exit, color=line.get_color(), ls=":", lw=0.8)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("seconds")
        ax.set_ylabel("probability")
        ax.set_title(Path(clip.clip).name, fontsize=9)
        ax.legend(fontsize=6, loc="upper left", ncol=3)
        written.append(_save(plt, fig, folder / f"{i:03d}_{Path(clip.clip).stem}.png"))
    return written
