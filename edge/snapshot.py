"""The alert snapshot: the frame with the triplets' boxes and the caption drawn on it, as JPEG."""

from __future__ import annotations

import cv2
import numpy as np

SUBJECT_COLOR = (40, 40, 230)  # BGR red
OBJECT_COLOR = (0, 170, 255)  # orange
TEXT_COLOR = (255, 255, 255)
BAND_COLOR = (25, 25, 25)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def render_snapshot(
    frame: np.ndarray,
    boxes: list[tuple[np.ndarray, np.ndarray, str]],
    title: str,
    caption: str,
    quality: int = 90,
) -> bytes:
    """boxes: (subject xyxy, object xyxy, "person aim gun" label) in frame pixels -> JPEG bytes."""
    img = frame.copy()
    h, w = img.shape[:2]
    scale = max(0.35, min(w, h) / 700)
    thick = max(1, round(scale * 2))
    for subject, obj, label in boxes:
        for box, color in ((obj, OBJECT_COLOR), (subject, SUBJECT_COLOR)):
            x1, y1, x2, y2 = (round(v) for v in box)
            cv2.rectangle(img, (x1, y1), (x2, y2), color, thick)
        x1, y1 = int(subject[0]), max(int(subject[1]) - 4, 10)
        cv2.putText(
            img, label, (x1, y1), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, SUBJECT_COLOR, thick, cv2.LINE_AA
        )
    chars = max(20, int(w / (scale * 11)))
    lines = [title, *_wrap(caption, chars)][:6]
    line_h = int(22 * scale) + 4
    band = line_h * len(lines) + 6
    banded = np.full((h + band, w, 3), BAND_COLOR, np.uint8)
    banded[:h] = img
    for i, line in enumerate(lines):
        cv2.putText(
            banded,
            line,
            (6, h + line_h * (i + 1)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale * 0.7,
            TEXT_COLOR,
            max(1, thick - 1),
            cv2.LINE_AA,
        )
    ok, data = cv2.imencode(".jpg", banded, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()
