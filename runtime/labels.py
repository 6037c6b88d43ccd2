"""Clip labels: which anomaly happened when, the evidence `edge-tune` measures thresholds against.

In the runtime because both sides use it: `edge-datagen` (export tools) writes it, `edge-tune`
(the edge app) reads it.

The file (`labels.json`) is small JSON a person can write by hand; `edge-datagen --video` writes it
for its generated clips:

    {
      "format": "h2a-labels",
      "version": 1,
      "clips": [
        {"clip": "videos/clip_000.mp4", "events": [{"type": "fighting", "start": 2.3, "end": 5.1}]},
        {"clip": "videos/clip_003.mp4", "events": []}
      ]
    }

`clip` is relative to the labels file (or absolute); `start` and `end` are seconds of video
position. A clip listed with no events is labelled normal throughout; a clip not listed is
unlabelled (its alarms are counted, not judged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from h2a.runtime.errors import InputError
from h2a.runtime.schema import SchemaError, from_data

LABELS_FORMAT = "h2a-labels"
LABELS_VERSION = 1


@dataclass(frozen=True)
class LabelledEvent:
    type: str
    start: float = field(metadata={"min": 0.0})
    end: float = field(metadata={"min": 0.0})


@dataclass(frozen=True)
class ClipLabels:
    clip: str
    events: list[LabelledEvent]


@dataclass(frozen=True)
class LabelsFile:
    format: str = field(metadata={"choices": (LABELS_FORMAT,)})
    version: int = field(metadata={"choices": (LABELS_VERSION,)})
    clips: list[ClipLabels]


def load_labels(path: Path, anomalies: list[str] | None = None) -> dict[Path, list[LabelledEvent]]:
    """-> labelled events per clip (resolved path). `anomalies` (the bundle's types) refuses a
    label of a type the model does not know."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise InputError(f"{path}: cannot read the labels ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    try:
        labels = from_data(LabelsFile, data)
    except SchemaError as err:
        raise InputError(f"{path}: {err}") from None
    out: dict[Path, list[LabelledEvent]] = {}
    for i, clip in enumerate(labels.clips):
        for j, event in enumerate(clip.events):
            where = f"clips[{i}].events[{j}]"
            if event.end < event.start:
                raise InputError(f"{path}: '{where}.end' ({event.end}) is before its start ({event.start})")
            if anomalies is not None and event.type not in anomalies:
                raise InputError(
                    f"{path}: '{where}.type' is {event.type!r}; this model knows {', '.join(anomalies)}"
                )
        out[(path.parent / clip.clip).resolve()] = list(clip.events)
    return out


def labels_json(clips: dict[str, list[tuple[str, float, float]]]) -> str:
    """The file for {clip path: [(type, start s, end s), ...]} (what edge-datagen writes)."""
    return json.dumps(
        {
            "format": LABELS_FORMAT,
            "version": LABELS_VERSION,
            "clips": [
                {"clip": clip, "events": [{"type": t, "start": s, "end": e} for t, s, e in events]}
                for clip, events in clips.items()
            ],
        },
        indent=1,
    )
