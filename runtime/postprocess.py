"""HOI post-processing: from the `hoi` graph's outputs to scored triplets (numpy only).

Each interaction query points at a subject and an object instance (argmax of its pointer
logits); a triplet's score is action probability x subject confidence x object confidence, as in
HOTR. Duplicates (same labels and action, both boxes overlapping) are suppressed, best first.
Training uses the same function to caption from *detected* triplets, so both sides agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Triplet:
    subject_box: tuple[float, float, float, float]  # cx, cy, w, h in [0, 1] of the model input
    object_box: tuple[float, float, float, float]
    subject: str
    object: str
    action: str
    score: float

    @property
    def words(self) -> str:
        """The HOI tag the caption model reads: "person aim gun"."""
        return f"{self.subject} {self.action} {self.object}"


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def cxcywh_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (..., 4) and b (..., 4) in cx, cy, w, h, elementwise."""
    ax1, ay1, ax2, ay2 = (
        a[..., 0] - a[..., 2] / 2,
        a[..., 1] - a[..., 3] / 2,
        a[..., 0] + a[..., 2] / 2,
        a[..., 1] + a[..., 3] / 2,
    )
    bx1, by1, bx2, by2 = (
        b[..., 0] - b[..., 2] / 2,
        b[..., 1] - b[..., 3] / 2,
        b[..., 0] + b[..., 2] / 2,
        b[..., 1] + b[..., 3] / 2,
    )
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return inter / np.maximum(union, 1e-9)


def decode_triplets(
    outputs: dict[str, np.ndarray],
    objects: list[str],
    actions: list[str],
    min_score: float,
    nms_iou: float = 0.7,
    max_triplets: int = 10,
    index: int = 0,
) -> list[Triplet]:
    """Triplets of image `index` of a batch of `hoi` outputs, best first."""
    boxes = outputs["boxes"][index]  # (N, 4)
    cls = softmax(outputs["obj_logits"][index])[:, :-1]  # (N, C) without "no object"
    inst_label, inst_conf = cls.argmax(-1), cls.max(-1)  # (N,)
    act = sigmoid(outputs["act_logits"][index])  # (Q, A)
    sub = outputs["sub_ptr"][index].argmax(-1)  # (Q,)
    obj = outputs["obj_ptr"][index].argmax(-1)  # (Q,)
    scores = act * (inst_conf[sub] * inst_conf[obj])[:, None]  # (Q, A)
    q_idx, a_idx = np.nonzero(scores >= min_score)
    order = np.argsort(-scores[q_idx, a_idx], kind="stable")
    kept: list[Triplet] = []
    for k in order:
        q, a = int(q_idx[k]), int(a_idx[k])
        s, o = int(sub[q]), int(obj[q])
        if s == o:
            continue
        cand = Triplet(
            _box(boxes[s]),
            _box(boxes[o]),
            objects[int(inst_label[s])],
            objects[int(inst_label[o])],
            actions[a],
            float(scores[q, a]),
        )
        if any(_duplicate(cand, t, nms_iou) for t in kept):
            continue
        kept.append(cand)
        if len(kept) >= max_triplets:
            break
    return kept


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


def _duplicate(a: Triplet, b: Triplet, iou: float) -> bool:
    if (a.subject, a.object, a.action) != (b.subject, b.object, b.action):
        return False
    return bool(
        cxcywh_iou(np.array(a.subject_box), np.array(b.subject_box)) > iou
        and cxcywh_iou(np.array(a.object_box), np.array(b.object_box)) > iou
    )


def anomaly_probabilities(
    outputs: dict[str, np.ndarray], anomalies: list[str], index: int = 0
) -> dict[str, float]:
    probs = sigmoid(outputs["anomaly_logits"][index])
    return {name: float(p) for name, p in zip(anomalies, probs, strict=True)}
