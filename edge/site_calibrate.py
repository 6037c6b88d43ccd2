"""`edge-tune calibrate`: per-site thresholds, label-free, from footage known to be normal.

A site holds steady offsets (one type sits at 0.6 all day on one camera and at 0.1 on the next),
so a threshold that fits one site floods another with false alarms. With an hour or so of the
site's normal footage replayed, every event the event logic opens is a false alarm, and the
lowest enter threshold whose false alarms stay within the target is the most sensitive setting
the site allows. Per type:

1. each clip is cut in time: the first part calibrates, the last `holdout` fraction is kept out;
2. on the calibration part, enter runs over a fine grid (exit keeps the config's hysteresis gap,
   min duration, cooldown and EMA stay as configured) through the same `TrackerBank` as
   `edge-run`; the lowest enter within the target is taken and `margin` added. By default a
   threshold is only raised, never made more sensitive than configured (`allow_lower` lets it
   drop to what the site allows);
3. the false-alarm rate of that setting on the held-out part is what the report promises; where
   labelled clips are given too, the recall before and after says what it costs.

The thresholds are written into the config file with tomlkit, which keeps the user's comments
and layout; a running `edge-run` picks them up through its config reload.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from h2a.edge.config import ConfigError, EdgeConfig, parse_config
from h2a.edge.events import TypeThresholds
from h2a.edge.score_cache import ClipScores, ScoreCache
from h2a.edge.sweep import judge, labelled_hours, predict
from h2a.runtime.cli import require
from h2a.runtime.labels import LabelledEvent

#: Enter thresholds tried, finest where trained models separate normal from anomalous.
CALIBRATION_ENTERS = tuple(round(0.20 + 0.01 * i, 2) for i in range(80))  # 0.20 ... 0.99
DEFAULT_HOLDOUT = 0.3
DEFAULT_MARGIN = 0.02
MAX_ENTER = 0.99


@dataclass(frozen=True)
class TypeCalibration:
    anomaly: str
    before: TypeThresholds
    after: TypeThresholds
    calibration_fa_per_hour: float  # of `after`, on the calibration part
    held_out_fa_per_hour_before: float
    held_out_fa_per_hour: float  # of `after`: what the site should see
    target_met: bool  # on the held-out part
    recall_before: float | None = None  # on labelled clips, where given
    recall_after: float | None = None


def split_in_time(cache: ScoreCache, holdout: float) -> tuple[ScoreCache, ScoreCache]:
    """(first part, last `holdout` fraction) of every clip, positions kept."""
    first: list[ClipScores] = []
    last: list[ClipScores] = []
    for c in cache.clips:
        cut = round(len(c.positions) * (1 - holdout))
        for part, rows in ((first, slice(0, cut)), (last, slice(cut, None))):
            part.append(
                ClipScores(
                    c.clip,
                    c.sha256,
                    c.frame_size,
                    c.positions[rows],
                    c.probs[rows],
                    c.triplet_scores[rows],
                    c.subject_boxes[rows],
                    c.object_boxes[rows],
                )
            )
    return ScoreCache(cache.header, first), ScoreCache(cache.header, last)


def _fa_per_hour(
    cache: ScoreCache, settings: dict[str, list[TypeThresholds]], config: EdgeConfig | None
) -> dict[str, list[float]]:
    """False alarms per hour of each setting of each type on footage that is normal throughout
    (one pass over the frames for every type and setting)."""
    normal: dict[str, list[LabelledEvent]] = {c.clip: [] for c in cache.clips}
    hours = labelled_hours(cache, normal)
    events = predict(cache, settings, config)
    return {
        name: [
            judge(name, th, ev, normal, hours).fa_per_hour for th, ev in zip(grid, events[name], strict=True)
        ]
        for name, grid in settings.items()
    }


def _recalls(
    labelled: tuple[ScoreCache, dict[str, list[LabelledEvent]]],
    settings: dict[str, list[TypeThresholds]],
    config: EdgeConfig | None,
) -> dict[str, list[float | None]]:
    cache, labels = labelled
    hours = labelled_hours(cache, labels)
    events = predict(cache, settings, config)
    return {
        name: [judge(name, th, ev, labels, hours).recall for th, ev in zip(grid, events[name], strict=True)]
        for name, grid in settings.items()
    }


def calibrate(
    normal: ScoreCache,
    thresholds: dict[str, TypeThresholds],
    target_fa_per_hour: float,
    holdout: float = DEFAULT_HOLDOUT,
    margin: float = DEFAULT_MARGIN,
    labelled: tuple[ScoreCache, dict[str, list[LabelledEvent]]] | None = None,
    allow_lower: bool = False,
    config: EdgeConfig | None = None,
) -> list[TypeCalibration]:
    """`config`: its zones judge events as in edge-run (its thresholds are `thresholds`)."""
    if not 0 < holdout < 1:
        raise ValueError("--holdout must lie between 0 and 1")
    calib, held = split_in_time(normal, holdout)
    types = normal.header.anomalies
    gaps = {t: thresholds[t].enter - thresholds[t].exit for t in types}
    grids = {
        t: [
            dataclasses.replace(thresholds[t], enter=e, exit=round(max(0.0, e - gaps[t]), 4))
            for e in CALIBRATION_ENTERS
        ]
        for t in types
    }
    rates = _fa_per_hour(calib, grids, config)
    after: dict[str, TypeThresholds] = {}
    for t in types:
        within = np.flatnonzero(np.array(rates[t]) <= target_fa_per_hour)
        enter = min(MAX_ENTER, (grids[t][within[0]].enter if len(within) else MAX_ENTER) + margin)
        if not allow_lower:
            enter = max(enter, thresholds[t].enter)
        after[t] = dataclasses.replace(
            thresholds[t], enter=round(enter, 4), exit=round(max(0.0, enter - gaps[t]), 4)
        )
    calib_rates = _fa_per_hour(calib, {t: [after[t]] for t in types}, config)
    pairs = {t: [thresholds[t], after[t]] for t in types}
    held_rates = _fa_per_hour(held, pairs, config)
    recalls = _recalls(labelled, pairs, config) if labelled is not None else None
    out = []
    for t in types:
        held_before, held_after = held_rates[t]
        recall_before, recall_after = recalls[t] if recalls is not None else (None, None)
        out.append(
            TypeCalibration(
                t,
                before=thresholds[t],
                after=after[t],
                calibration_fa_per_hour=calib_rates[t][0],
                held_out_fa_per_hour_before=held_before,
                held_out_fa_per_hour=held_after,
                target_met=held_after <= target_fa_per_hour,
                recall_before=recall_before,
                recall_after=recall_after,
            )
        )
    return out


def write_thresholds(
    config_path: Path, results: list[TypeCalibration], anomalies: list[str], note: str
) -> None:
    """Set `[anomaly.<type>] enter/exit` in the TOML file, keeping everything else as written.
    The new text is validated as `edge-run` would before it replaces the file (atomically)."""
    tomlkit = require("tomlkit", "cpu", "edge-tune calibrate")
    text = config_path.read_text() if config_path.exists() else ""
    doc = tomlkit.parse(text)
    if "anomaly" not in doc:
        doc["anomaly"] = tomlkit.table(is_super_table=True)
    section = doc["anomaly"]
    stamp = dt.date.today().isoformat()
    for r in results:
        if r.anomaly not in section:
            section[r.anomaly] = tomlkit.table()
        table = section[r.anomaly]
        for key, value in (("enter", r.after.enter), ("exit", r.after.exit)):
            item = tomlkit.item(float(value))
            item.comment(f"edge-tune calibrate {stamp}: {note}")
            table[key] = item
    new_text = tomlkit.dumps(doc)
    try:
        parse_config(new_text, anomalies, {}, "check")
    except ConfigError as err:
        raise ConfigError(
            f"{config_path}: the calibrated config would not load ({err}); file left as it was"
        ) from None
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(new_text)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(config_path)
