"""Evaluate a bundle (or a checkpoint, exported first) on a data split, through the runtime.

Checkpoints are exported to a temporary bundle and evaluated with the same runtime code the
device runs, so the numbers describe what will be deployed, not a torch-only path.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from h2a.export_tools.data.annotations import DataSet, Record
from h2a.export_tools.evaluation.cider import cider_d
from h2a.export_tools.evaluation.metrics import (
    HOIBox,
    anomaly_auc,
    anomaly_type_map,
    hoi_role_map,
    mean_words,
    token_f1,
)
from h2a.runtime.bundle import load_bundle
from h2a.runtime.engine import Engine
from h2a.runtime.errors import InputError

FIELDS = ("what", "who", "where")
#: mAP needs the whole ranking, so evaluation keeps low-scoring triplets that run time would drop.
EVAL_MIN_SCORE, EVAL_MAX_TRIPLETS = 0.001, 50


def gt_hois(record: Record) -> list[HOIBox]:
    return [HOIBox(record.boxes[s], record.boxes[o], record.labels[o], a) for s, o, a in record.hois]


def evaluate_engine(
    engine: Engine,
    data: DataSet,
    split: str = "test",
    progress: bool = True,
    caption: bool = True,
    keep_tokens: bool = False,
) -> dict[str, Any]:
    """Metrics of one engine on one split; `keep_tokens` adds each caption's token ids (the INT8
    gate compares them position by position)."""
    records = data.split(split)
    if not records:
        raise InputError(f"{data.root}: the {split!r} split is empty")
    anomalies = engine.anomalies
    type_scores, type_labels, preds, gts = [], [], [], []
    candidates: list[str] = []
    tokens: list[list[int]] = []
    references: list[list[str]] = []
    field_f1: dict[str, list[float]] = {f: [] for f in FIELDS}
    detect_s = caption_s = 0.0
    for rec in tqdm(records, desc=f"evaluate {split}", unit="img", disable=not progress):
        frame = cv2.imread(str(rec.file), cv2.IMREAD_COLOR)
        if frame is None:
            raise InputError(f"{rec.file}: missing or unreadable image")
        t0 = time.perf_counter()
        ranked = engine.detect(frame, EVAL_MIN_SCORE, EVAL_MAX_TRIPLETS)
        detect_s += time.perf_counter() - t0
        run_time_score = engine.min_triplet_score
        det = dataclasses.replace(
            ranked, triplets=[t for t in ranked.triplets if t.score >= run_time_score][:10]
        )
        type_scores.append([det.anomaly[a] for a in anomalies])
        type_labels.append([1.0 if rec.anomaly_type == a else 0.0 for a in anomalies])
        preds.append(
            [
                HOIBox(tuple(s.tolist()), tuple(o.tolist()), t.object, t.action, t.score)
                for t, (s, o) in zip(ranked.triplets, ranked.frame_boxes(), strict=True)
            ]
        )
        gts.append(gt_hois(rec))
        if caption and rec.caption:
            t0 = time.perf_counter()
            explanation = engine.explain(det)
            caption_s += time.perf_counter() - t0
            candidates.append(explanation.fields.total or explanation.text)
            tokens.append(explanation.tokens)
            references.append([rec.caption["total"]])
            for f in FIELDS:
                field_f1[f].append(token_f1(getattr(explanation.fields, f), rec.caption[f]))
    scores, labels = np.asarray(type_scores), np.asarray(type_labels)
    type_map, type_aps = anomaly_type_map(scores, labels)
    enter = np.array([engine.manifest.thresholds.anomaly[a] for a in anomalies])  # (K,)
    normal = labels.max(1) == 0  # (n,)
    role_map, role_aps = hoi_role_map(preds, gts)
    report: dict[str, Any] = {
        "split": split,
        "images": len(records),
        "anomaly_auc": anomaly_auc(scores.max(1), labels.max(1)),
        "anomaly_type_map": type_map,
        "anomaly_type_ap": dict(zip(anomalies, type_aps, strict=True)),
        "hoi_role_map": role_map,
        "hoi_role_ap": role_aps,
        # normal frames on which some type reaches the bundle's enter threshold: what would open
        # an event if the frame stayed on screen
        "normal_false_positive_rate": float((scores[normal] >= enter).any(1).mean()) if normal.any() else 0.0,
        "detect_ms": 1000 * detect_s / len(records),
    }
    if candidates:
        cider, _ = cider_d(candidates, references)
        report.update(
            {
                "cider_d": cider,
                **{f"{f}_f1": float(np.mean(v)) for f, v in field_f1.items()},
                "fields_f1": float(np.mean([np.mean(v) for v in field_f1.values()])),
                "avg_words": mean_words(candidates),
                "caption_ms": 1000 * caption_s / len(candidates),
                "examples": [
                    {"caption": c, "reference": r[0]}
                    for c, r in list(zip(candidates, references, strict=True))[:5]
                ],
            }
        )
        if keep_tokens:
            report["caption_tokens"] = tokens
    return report


def engine_for(path: Path, progress: bool = True) -> tuple[Engine, str]:
    """A bundle path (`.plan`) opens directly; anything else is a checkpoint, exported first."""
    if path.suffix == ".plan":
        return Engine(load_bundle(path)), "bundle"
    from h2a.export_tools.checkpoint import load_checkpoint
    from h2a.export_tools.export.exporter import export_bundle
    from h2a.runtime.manifest import Labels

    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint or bundle")
    ckpt, _ = load_checkpoint(path)
    labels = Labels(**ckpt.meta["labels"]) if "labels" in ckpt.meta else None
    if labels is None:
        raise InputError(f"{path}: checkpoint has no label maps (not written by edge-train)")
    with tempfile.TemporaryDirectory() as tmp:
        bundle_path = Path(tmp) / "eval.plan"
        export_bundle(ckpt, bundle_path, labels, check=False, progress=False, source=path.name)
        return Engine(load_bundle(bundle_path)), "checkpoint"


SUMMARY_KEYS = (
    "anomaly_auc",
    "anomaly_type_map",
    "hoi_role_map",
    "normal_false_positive_rate",
    "cider_d",
    "what_f1",
    "who_f1",
    "where_f1",
    "avg_words",
    "detect_ms",
    "caption_ms",
)


def markdown(reports: dict[str, dict[str, Any]]) -> str:
    names = list(reports)
    head = "| metric | " + " | ".join(names) + (" | delta |" if len(names) == 2 else " |")
    rows = [head, "|---" * (len(names) + 1 + (len(names) == 2)) + "|"]
    for key in SUMMARY_KEYS:
        values = [reports[n].get(key) for n in names]
        if all(v is None for v in values):
            continue
        cells = [f"{v:.4f}" if isinstance(v, float) else "-" for v in values]
        if len(names) == 2 and all(isinstance(v, float) for v in values):
            cells.append(f"{values[1] - values[0]:+.4f}")  # type: ignore[operator]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
