"""The alert snapshot: the frame with the triplets' boxes and the caption drawn on it, as JPEG."""

from __future__ import annotations

import cv2
import numpy as np

SUBJECT_COLOR = (40, 40, 230)  # BGR red
OBJECT_COLOR = (0, 170, 255)  # orange
TEXT_COLOR = (255, 255, 255)
BAND_COLOR = (25, 25, 25)
#: Drawing scales with the frame: 1.0 at a 700-pixel short side, never below 0.35.
REFERENCE_SIDE = 700
MIN_SCALE = 0.35
BOX_THICKNESS = 2  # at scale 1
LABEL_FONT = 0.8  # box labels, relative to the scale
LABEL_LIFT = 4  # pixels between a label and its box
CAPTION_FONT = 0.7  # the caption band
CHAR_WIDTH = 11  # approximate width of a band character at scale 1, for wrapping
MIN_CHARS = 20
LINE_HEIGHT = 22  # at scale 1
LINE_GAP = 4
BAND_PAD = 6
MAX_LINES = 6  # title and caption lines; a longer caption is cut


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
    scale = max(MIN_SCALE, min(w, h) / REFERENCE_SIDE)
    thick = max(1, round(scale * BOX_THICKNESS))
    for subject, obj, label in boxes:
        for box, color in ((obj, OBJECT_COLOR), (subject, SUBJECT_COLOR)):
            x1, y1, x2, y2 = (round(v) for v in box)
            cv2.rectangle(img, (x1, y1), (x2, y2), color, thick)
        x1, y1 = int(subject[0]), max(int(subject[1]) - LABEL_LIFT, LINE_HEIGHT // 2)
        cv2.putText(
            img,
            label,
            (x1, y1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale * LABEL_FONT,
            SUBJECT_COLOR,
            thick,
            cv2.LINE_AA,
        )
    chars = max(MIN_CHARS, int(w / (scale * CHAR_WIDTH)))
    lines = [title, *_wrap(caption, chars)][:MAX_LINES]
    line_h = int(LINE_HEIGHT * scale) + LINE_GAP
    band = line_h * len(lines) + BAND_PAD
    banded = np.full((h + band, w, 3), BAND_COLOR, np.uint8)
    banded[:h] = img
    for i, line in enumerate(lines):
        cv2.putText(
            banded,
            line,
            (BAND_PAD, h + line_h * (i + 1)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale * CAPTION_FONT,
            TEXT_COLOR,
            max(1, thick - 1),
            cv2.LINE_AA,
        )
    ok, data = cv2.imencode(".jpg", banded, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()
