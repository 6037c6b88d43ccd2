"""Config polygons on frames: masks blanked before detection, zones an alert reports.

Polygon points are in [0, 1] of the frame, so one config serves any resolution.
"""

from __future__ import annotations

from typing import TypeAlias

import cv2
import numpy as np

from h2a.edge.config_areas import Polygon, Zone

Area: TypeAlias = Polygon | Zone


def _pixels(polygon: Area, width: int, height: int) -> np.ndarray:
    return np.array([[x * width, y * height] for x, y in polygon.points], np.float32)  # (n, 2)


def polygon_mask(polygons: tuple[Polygon, ...], width: int, height: int) -> np.ndarray | None:
    """(height, width) bool, True inside any polygon; None where there are none."""
    if not polygons:
        return None
    mask = np.zeros((height, width), np.uint8)
    for poly in polygons:
        cv2.fillPoly(mask, [_pixels(poly, width, height).astype(np.int32)], 255)
    return mask.astype(bool)


def zones_of(
    zones: tuple[Area, ...], boxes: list[tuple[np.ndarray, np.ndarray]], width: int, height: int
) -> list[str]:
    """Names of the zones that hold the centre of some triplet's subject box (frame pixels)."""
    hits = []
    for zone in zones:
        contour = _pixels(zone, width, height)
        for subject, _ in boxes:
            cx, cy = float(subject[0] + subject[2]) / 2, float(subject[1] + subject[3]) / 2
            if cv2.pointPolygonTest(contour, (cx, cy), False) >= 0:
                hits.append(zone.name)
                break
    return hits


class Masker:
    """Blanks the config's masks out of frames before detection (with the model's pad value, so
    a masked area looks like letterbox padding); the mask is rebuilt only when the size or the
    masks change."""

    def __init__(self, pad_value: int) -> None:
        self.pad_value = pad_value
        self._key: tuple[tuple[Polygon, ...], int, int] | None = None
        self._mask: np.ndarray | None = None

    def __call__(self, image: np.ndarray, masks: tuple[Polygon, ...]) -> np.ndarray:
        """(H, W, 3) frame -> the same frame, or a masked copy."""
        if not masks:
            return image
        h, w = image.shape[:2]
        if self._key != (masks, w, h):
            self._mask, self._key = polygon_mask(masks, w, h), (masks, w, h)
        masked = image.copy()
        masked[self._mask] = self.pad_value
        return masked
