"""The demo's verdict on itself: did each demo clip alert on its event, with the right type, and
did nothing else alert?

A newcomer reads the end of `make demo` and nothing else, so the answer is one plain paragraph
there, computed from the alert store and the clips' ground truth (`videos.json`), never assumed.
Alerts arrive as the plain rows of `edge-alerts export --jsonl` (export_tools does not import the
edge application).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

#: An alert counts for an event when it starts within this many seconds of the event's frames:
#: events need a few frames above threshold before they open, and close after a cooldown.
SLACK_S = 2.0


@dataclass(frozen=True)
class ClipVerdict:
    clip: str
    expected: list[str]  # anomaly types of the clip's events, in order
    found: list[str]  # types of the alerts that matched an event
    missed: list[str]  # event types nothing alerted on
    wrong: list[str]  # alerts that matched no event: "type at 3.2 s"

    @property
    def ok(self) -> bool:
        return not self.missed and not self.wrong

    def line(self) -> str:
        want = ", ".join(self.expected) or "no anomaly"
        if self.ok:
            return f"  ok    {self.clip}: {want} -> alerted {', '.join(self.found) or 'nothing'}"
        problems = [f"missed {m}" for m in self.missed] + [f"false alarm {w}" for w in self.wrong]
        return f"  WRONG {self.clip}: {want} -> {'; '.join(problems)}"


def _matches(alert: dict[str, Any], event: dict[str, Any], fps: float) -> bool:
    position = alert.get("start_position")
    if alert.get("anomaly") != event["type"] or position is None:
        return False
    start, end = event["start_frame"] / fps, event["end_frame"] / fps
    return bool(start - SLACK_S <= float(position) <= end + SLACK_S)


def _position(alert: dict[str, Any]) -> float:
    return float(alert.get("start_position") or 0.0)


def check_clips(videos: list[dict[str, Any]], alerts: Iterable[dict[str, Any]]) -> list[ClipVerdict]:
    """`videos`: the `videos` list of `videos.json`; `alerts`: what edge-run stored for them."""
    by_clip: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        by_clip.setdefault(PurePath(str(alert.get("source", ""))).name, []).append(alert)
    verdicts = []
    for clip in videos:
        name = PurePath(clip["file"]).name
        pending = sorted(by_clip.pop(name, []), key=_position)
        found, missed = [], []
        for event in clip["events"]:
            hit = next((a for a in pending if _matches(a, event, float(clip["fps"]))), None)
            if hit is None:
                missed.append(event["type"])
            else:
                found.append(event["type"])
                pending.remove(hit)
        wrong = [f"{a.get('anomaly')} at {_position(a):.1f} s" for a in pending]
        verdicts.append(ClipVerdict(name, [e["type"] for e in clip["events"]], found, missed, wrong))
    for name, rest in sorted(by_clip.items()):  # alerts from a source that is not a demo clip
        verdicts.append(ClipVerdict(name, [], [], [], [str(a.get("anomaly")) for a in rest]))
    return verdicts


def summary(verdicts: list[ClipVerdict]) -> str:
    lines = [v.line() for v in verdicts]
    bad = [v for v in verdicts if not v.ok]
    if not bad:
        lines.append(f"demo self-check PASSED: all {len(verdicts)} clips alerted as their ground truth says.")
    else:
        lines.append(
            f"demo self-check FAILED on {len(bad)} of {len(verdicts)} clips: the chain ran, but this "
            "model's alerts do not match the clips' ground truth (retrain with another --seed, or "
            "tune thresholds with edge-tune)."
        )
    return "\n".join(lines)
