from __future__ import annotations

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from h2a.runtime.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessor,
    boxes_to_canvas,
    boxes_to_frame,
    letterbox_geometry,
)


def reference(frame: np.ndarray, size: int) -> np.ndarray:
    """Straightforward letterbox written independently of the optimised one."""
    h, w = frame.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = round(w * scale), round(h * scale)
    canvas = np.full((size, size, 3), 114, np.uint8)
    x0, y0 = (size - nw) // 2, (size - nh) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    rgb = canvas[:, :, ::-1].astype(np.float32) / 255.0
    norm = (rgb - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return norm.transpose(2, 0, 1)[None]


def test_preprocessor_matches_reference_and_reuses_its_buffer() -> None:
    rng = np.random.default_rng(0)
    pre = Preprocessor(64)
    first = None
    for shape in [(48, 80, 3), (48, 80, 3), (90, 30, 3)]:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        out, _ = pre(frame)
        np.testing.assert_allclose(out, reference(frame, 64), atol=1e-5)
        first = out if first is None else first
        assert out is first  # no per-frame allocation of the output


@settings(max_examples=60, deadline=None)
@given(w=st.integers(8, 2000), h=st.integers(8, 2000), size=st.sampled_from([64, 128, 512]))
def test_boxes_round_trip_through_the_letterbox(w: int, h: int, size: int) -> None:
    geo = letterbox_geometry(w, h, size)
    box = np.array([[0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h]])
    canvas = boxes_to_canvas(box, geo)
    assert ((canvas >= 0) & (canvas <= 1)).all()
    np.testing.assert_allclose(boxes_to_frame(canvas, geo), box, rtol=1e-6, atol=1e-6 * max(w, h))
