"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from h2a.export_tools.evaluation.cider import cider_d
from h2a.export_tools.evaluation.metrics import (
    HOIBox,
    anomaly_auc,
    anomaly_type_map,
    average_precision,
    hoi_role_map,
    iou,
    token_f1,
)
from h2a.runtime.caption_text import parse_caption


def test_iou() -> None:
    assert iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_auc_by_hand() -> None:
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert anomaly_auc(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.75)


def test_average_precision_by_hand() -> None:
    # ranked TP, FP, TP with 2 ground truths: precision at the recalls 0.5 and 1.0 is 1 and 2/3
    assert average_precision(np.array([1, 0, 1]), 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(np.array([1, 0]), 4) == pytest.approx(0.25)


def test_type_map_skips_absent_types() -> None:
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.6, 0.7, 0.2]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    mean, aps = anomaly_type_map(scores, labels)
    assert aps[0] == pytest.approx(1.0) and aps[1] == pytest.approx(1.0) and math.isnan(aps[2])
    assert mean == pytest.approx(1.0)


def test_hoi_role_map_needs_action_label_and_both_boxes() -> None:
    h, o = (0, 0, 10, 20), (12, 5, 16, 9)
    gt = [[HOIBox(h, o, "gun", "aim")], [HOIBox(h, o, "gun", "aim")]]
    shifted = (5, 0, 15, 20)  # IoU with h = 1/3 < 0.5
    preds = [
        [HOIBox(h, o, "gun", "aim", 0.9), HOIBox(h, o, "gun", "aim", 0.8)],  # TP then a duplicate FP
        [HOIBox(shifted, o, "gun", "aim", 0.95), HOIBox(h, o, "knife", "aim", 0.7)],  # both FP
    ]
    mean, per = hoi_role_map(preds, gt)
    # ranked: 0.95 FP, 0.9 TP, 0.8 FP, 0.7 FP over 2 GT -> recall 0.5 at precision 1/2
    assert per["aim"] == pytest.approx(0.25) and mean == pytest.approx(0.25)


def test_cider_d_identical_and_known_pair() -> None:
    refs = [["a man is aiming a gun"], ["two people are fighting"]]
    score, per = cider_d(["a man is aiming a gun", "two people are fighting"], refs)
    assert per == pytest.approx([10.0, 10.0]) and score == pytest.approx(10.0)
    # "a man is aiming" vs "a man is aiming a gun": every n-gram has idf log 2 (no n-gram is in
    # both references), so idf cancels in the cosine. 1-grams: candidate (1,1,1,1), reference
    # a=2, man, is, aiming, gun=1; clipped dot 2+1+1+1 = 5, norms 2 and sqrt(8).
    # n = 2..4: all candidate n-grams are in the reference once: k / sqrt(k * m).
    _, per = cider_d(["a man is aiming", "two people are fighting"], refs)
    cos = [5 / (2 * math.sqrt(8)), 3 / math.sqrt(3 * 5), 2 / math.sqrt(2 * 4), 1 / math.sqrt(1 * 3)]
    penalty = math.exp(-(2**2) / (2 * 6.0**2))
    assert per[0] == pytest.approx(10 * penalty * sum(cos) / 4)


def test_token_f1() -> None:
    assert token_f1("a man and a gun", "a man and a gun") == 1.0
    # prediction 3 tokens, reference 4, 2 shared -> P 2/3, R 1/2 -> F1 4/7
    assert token_f1("a woman runs", "a woman is running") == pytest.approx(4 / 7)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_parse_caption_fields() -> None:
    text = (
        "what : a man is aiming a gun. who : a man and a gun. where : in the middle of the image. "
        'total caption : the anomaly include " shoot ". in the middle of the image, a man is aiming a gun.'
    )
    f = parse_caption(text)
    assert f.what == "a man is aiming a gun"
    assert f.who == "a man and a gun"
    assert f.where == "in the middle of the image"
    assert f.total.startswith('the anomaly include "shoot"')
    assert parse_caption("garbage").what == ""
