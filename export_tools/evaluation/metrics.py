"""Evaluation metrics of the paper's Tables 1-3, written out so that each can be checked by hand:
image-level anomaly AUC and per-type AP (scikit-learn), HOI role mAP, What/Who/Where token F1
and caption length. CIDEr-D lives in `cider.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

Box = Sequence[float]  # x1, y1, x2, y2


def iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def anomaly_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """scores (n,) image anomaly score, labels (n,) 1 = anomalous."""
    return float(roc_auc_score(labels, scores))


def anomaly_type_map(scores: np.ndarray, labels: np.ndarray) -> tuple[float, list[float]]:
    """scores (n, K), labels (n, K) multi-hot -> mean AP over types that occur, and each type's AP."""
    aps = [
        float(average_precision_score(labels[:, k], scores[:, k])) if labels[:, k].any() else float("nan")
        for k in range(labels.shape[1])
    ]
    valid = [a for a in aps if not np.isnan(a)]
    return float(np.mean(valid)) if valid else float("nan"), aps


def average_precision(tp: np.ndarray, n_gt: int) -> float:
    """VOC all-point interpolated AP of detections already sorted by score."""
    if n_gt == 0:
        return float("nan")
    tp = tp.astype(np.float64)
    cum_tp = np.cumsum(tp)
    recall = cum_tp / n_gt
    precision = cum_tp / np.arange(1, len(tp) + 1)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@dataclass(frozen=True)
class HOIBox:
    subject: Box
    object: Box
    object_label: str
    action: str
    score: float = 1.0


def hoi_role_map(
    predictions: list[list[HOIBox]], ground_truth: list[list[HOIBox]], iou_threshold: float = 0.5
) -> tuple[float, dict[str, float]]:
    """Role mAP over actions: a detection is right when its action and object label match an
    unclaimed ground-truth triplet of its image and both boxes overlap it with IoU >= threshold."""
    actions = sorted({g.action for gts in ground_truth for g in gts})
    per_action: dict[str, float] = {}
    for action in actions:
        dets = [(p.score, i, p) for i, preds in enumerate(predictions) for p in preds if p.action == action]
        dets.sort(key=lambda d: -d[0])
        gts = {i: [g for g in gt if g.action == action] for i, gt in enumerate(ground_truth)}
        claimed = {i: [False] * len(g) for i, g in gts.items()}
        tp = np.zeros(len(dets))
        for k, (_, i, p) in enumerate(dets):
            best, best_j = 0.0, -1
            for j, g in enumerate(gts[i]):
                if claimed[i][j] or g.object_label != p.object_label:
                    continue
                overlap = min(iou(p.subject, g.subject), iou(p.object, g.object))
                if overlap >= iou_threshold and overlap > best:
                    best, best_j = overlap, j
            if best_j >= 0:
                claimed[i][best_j] = True
                tp[k] = 1
        per_action[action] = average_precision(tp, sum(len(g) for g in gts.values()))
    return (float(np.mean(list(per_action.values()))) if per_action else float("nan")), per_action


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-words F1 between two short texts."""
    p, r = prediction.lower().split(), reference.lower().split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def mean_words(texts: list[str]) -> float:
    return float(np.mean([len(t.split()) for t in texts])) if texts else 0.0
