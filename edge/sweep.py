"""`edge-tune sweep`: edge-run's event logic over cached scores, for a grid of thresholds.

Every candidate setting of every anomaly type is one row of the same `TrackerBank` that
`edge-run` steps, all rows stepped together frame by frame, clip by clip (each clip is its own
stream, as each `edge-run` is). A predicted event is therefore an event `edge-run` would open on
that clip with those thresholds.

Against labels (`h2a.runtime.labels`): a labelled event is *caught* when a predicted event of its
type overlaps it (widened by `tolerance` seconds each side), else *missed*; a predicted event
that overlaps no labelled event of its type in a labelled clip is a *false alarm*. False alarms
per hour count the labelled clips' hours; unlabelled clips add alarms, not judgements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from h2a.edge.arming import decide
from h2a.edge.config import EdgeConfig
from h2a.edge.events import TypeThresholds
from h2a.edge.score_cache import ClipScores, ScoreCache
from h2a.edge.tracker_bank import TrackerBank
from h2a.runtime.labels import LabelledEvent

#: The default grid per type: 14 enter values x 2 hysteresis gaps x 4 minimum durations = 112.
DEFAULT_ENTERS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 ... 0.95
DEFAULT_GAPS = (0.05, 0.15)  # exit = enter - gap, never below 0
DEFAULT_DURATIONS = (0.0, 0.5, 1.0, 2.0)
#: Seconds a predicted event may start before or end after its labelled event and still match.
DEFAULT_TOLERANCE_S = 1.0
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class PredictedEvent:
    clip: str
    start: float  # seconds of video position
    end: float
    peak: float


@dataclass(frozen=True)
class Outcome:
    """One setting of one type, judged against the labels."""

    anomaly: str
    setting: TypeThresholds
    alarms: int  # predicted events in all clips
    alarms_in_labelled: int  # predicted events in labelled clips
    caught: int
    missed: int
    false_alarms: int
    labelled_hours: float

    @property
    def fa_per_hour(self) -> float:
        return self.false_alarms / self.labelled_hours if self.labelled_hours > 0 else 0.0

    @property
    def recall(self) -> float | None:
        total = self.caught + self.missed
        return self.caught / total if total else None

    @property
    def precision(self) -> float | None:
        judged = self.caught_alarms + self.false_alarms
        return self.caught_alarms / judged if judged else None

    @property
    def caught_alarms(self) -> int:
        return self.alarms_in_labelled - self.false_alarms


def settings_grid(
    base: TypeThresholds,
    enters: Iterable[float] = DEFAULT_ENTERS,
    gaps: Iterable[float] = DEFAULT_GAPS,
    durations: Iterable[float] = DEFAULT_DURATIONS,
) -> list[TypeThresholds]:
    """Candidate settings around a type's configured ones (its cooldown and EMA are kept)."""
    out = []
    for enter in enters:
        for gap in gaps:
            for duration in durations:
                exit_ = round(max(0.0, enter - gap), 4)
                out.append(dataclasses.replace(base, enter=enter, exit=exit_, min_duration=duration))
    return out


def _subjects(clip: ClipScores, frame: int) -> list[tuple[np.ndarray, np.ndarray]]:
    kept = clip.triplet_scores[frame] > 0  # (TOP,)
    return list(zip(clip.subject_boxes[frame][kept], clip.object_boxes[frame][kept], strict=True))


def predict(
    cache: ScoreCache, settings: dict[str, list[TypeThresholds]], config: EdgeConfig | None = None
) -> dict[str, list[list[PredictedEvent]]]:
    """-> per type, per setting (in the given order), the events that would alert in `edge-run`.
    With zones in `config`, an event alerts once it opens or peaks inside a zone that arms it
    (`h2a.edge.arming.decide`, on the cached triplets); schedules need wall-clock time and are
    not applied to recorded clips."""
    types = cache.header.anomalies
    rows = [(name, th) for name in settings for th in settings[name]]
    column = np.array([types.index(name) for name, _ in rows])  # (rows,) which score each row reads
    found: list[list[PredictedEvent]] = [[] for _ in rows]
    for clip in cache.clips:
        bank = TrackerBank([th for _, th in rows])
        alerted = np.zeros(len(rows), bool)  # (rows,) the open event has raised its alert
        for f, (t, scores) in enumerate(zip(clip.positions, clip.probs, strict=True)):
            step = bank.step(float(t), scores[column].astype(np.float64))
            for r in np.flatnonzero(step.closed & alerted):
                found[r].append(
                    PredictedEvent(clip.clip, float(bank.start[r]), float(t), float(bank.peak[r]))
                )
            alerted[step.closed] = False
            if config is None or not config.zones:
                alerted |= step.opened
                continue
            for r in np.flatnonzero((step.opened | step.peaked) & ~alerted):
                lasted = float(t - bank.start[r])
                verdict = decide(
                    config, rows[r][0], float(bank.peak[r]), lasted, _subjects(clip, f), clip.frame_size, None
                )
                alerted[r] = verdict.armed
        last = float(clip.positions[-1]) if len(clip.positions) else 0.0
        for r in np.flatnonzero(bank.close_open() & alerted):
            found[r].append(PredictedEvent(clip.clip, float(bank.start[r]), last, float(bank.peak[r])))
    out: dict[str, list[list[PredictedEvent]]] = {name: [] for name in settings}
    for (name, _), events in zip(rows, found, strict=True):
        out[name].append(events)
    return out


def _overlaps(event: PredictedEvent, label: LabelledEvent, tolerance: float) -> bool:
    return event.start <= label.end + tolerance and event.end >= label.start - tolerance


def judge(
    anomaly: str,
    setting: TypeThresholds,
    events: list[PredictedEvent],
    labels: dict[str, list[LabelledEvent]],
    labelled_hours: float,
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> Outcome:
    """`labels`: labelled events per clip name (all types; a clip absent is unlabelled)."""
    caught = missed = false_alarms = in_labelled = 0
    by_clip: dict[str, list[PredictedEvent]] = {}
    for e in events:
        by_clip.setdefault(e.clip, []).append(e)
    for clip, clip_labels in labels.items():
        mine = [lab for lab in clip_labels if lab.type == anomaly]
        predicted = by_clip.get(clip, [])
        in_labelled += len(predicted)
        for lab in mine:
            if any(_overlaps(e, lab, tolerance) for e in predicted):
                caught += 1
            else:
                missed += 1
        false_alarms += sum(1 for e in predicted if not any(_overlaps(e, lab, tolerance) for lab in mine))
    return Outcome(anomaly, setting, len(events), in_labelled, caught, missed, false_alarms, labelled_hours)


def labelled_hours(cache: ScoreCache, labels: dict[str, list[LabelledEvent]]) -> float:
    return sum(c.duration for c in cache.clips if c.clip in labels) / SECONDS_PER_HOUR


def labels_by_clip(
    cache: ScoreCache, labels: dict[Path, list[LabelledEvent]]
) -> dict[str, list[LabelledEvent]]:
    """Clip labels keyed as the cache names clips (resolved paths), for the clips replayed."""
    named = {str(path): events for path, events in labels.items()}
    return {c.clip: named[c.clip] for c in cache.clips if c.clip in named}


def alert_evidence(folder: Path, cache: ScoreCache) -> dict[str, list[LabelledEvent]]:
    """Alerts a field engineer marked (`edge-alerts label`) on clips that were replayed: a true
    alarm becomes a labelled event over the alert's span; a clip with any marked alert counts as
    labelled, so alarms there without a true label are judged false."""
    from h2a.edge.alert_store import AlertStore

    replayed = {c.clip for c in cache.clips}
    out: dict[str, list[LabelledEvent]] = {}
    for a in AlertStore(folder, readonly=True).alerts():
        if a.label is None or a.source not in replayed or a.start_position is None:
            continue
        events = out.setdefault(a.source, [])
        if a.label == "true":
            end = a.end_position if a.end_position is not None else a.start_position
            events.append(LabelledEvent(a.anomaly, a.start_position, end))
    return out


def recommend(outcomes: list[Outcome], target_fa_per_hour: float) -> tuple[Outcome, bool]:
    """The operating point: within the target false-alarm rate, the best recall, then the fewest
    false alarms, then the highest (most conservative) thresholds. -> (outcome, target met);
    where no setting meets the target, the one with the fewest false alarms."""
    within = [o for o in outcomes if o.fa_per_hour <= target_fa_per_hour]
    if within:
        best = max(
            within,
            key=lambda o: (o.recall or 0.0, -o.fa_per_hour, o.setting.enter, o.setting.min_duration),
        )
        return best, True
    best = min(outcomes, key=lambda o: (o.fa_per_hour, -(o.recall or 0.0), -o.setting.enter))
    return best, False
