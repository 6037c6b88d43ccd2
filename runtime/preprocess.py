"""Letterbox + colour + normalise + CHW: the one definition training and the runtime share.

The frame is scaled to fit `size` x `size` keeping its aspect, centred on a `pad_value` canvas,
converted BGR -> RGB, scaled to 0..1, normalised by mean/std and laid out NCHW. Buffers are
allocated once per frame size, so steady-state frames allocate nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ImageNet statistics (the backbone's convention), on 0..1 RGB pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """Where the frame landed on the `size` x `size` canvas: canvas = frame * scale + (pad_x, pad_y).

    It carries its canvas size, so mapping boxes back to the frame needs nothing else.
    """

    size: int
    scale: float
    pad_x: int
    pad_y: int
    new_w: int
    new_h: int
    frame_w: int
    frame_h: int


def letterbox_geometry(frame_w: int, frame_h: int, size: int) -> Letterbox:
    scale = min(size / frame_w, size / frame_h)
    new_w = max(1, min(size, round(frame_w * scale)))
    new_h = max(1, min(size, round(frame_h * scale)))
    return Letterbox(size, scale, (size - new_w) // 2, (size - new_h) // 2, new_w, new_h, frame_w, frame_h)


def boxes_to_frame(boxes: np.ndarray, geo: Letterbox) -> np.ndarray:
    """Model boxes (..., 4) cx, cy, w, h in [0, 1] of the canvas -> x1, y1, x2, y2 frame pixels."""
    cx, cy, w, h = (boxes[..., i] * geo.size for i in range(4))
    x1 = (cx - w / 2 - geo.pad_x) / geo.scale
    y1 = (cy - h / 2 - geo.pad_y) / geo.scale
    x2 = (cx + w / 2 - geo.pad_x) / geo.scale
    y2 = (cy + h / 2 - geo.pad_y) / geo.scale
    out = np.stack((x1, y1, x2, y2), axis=-1)
    out[..., 0::2] = out[..., 0::2].clip(0, geo.frame_w)
    out[..., 1::2] = out[..., 1::2].clip(0, geo.frame_h)
    return out


def boxes_to_canvas(boxes_xyxy: np.ndarray, geo: Letterbox) -> np.ndarray:
    """Frame pixels x1, y1, x2, y2 -> cx, cy, w, h in [0, 1] of the canvas (training targets)."""
    x1 = boxes_xyxy[..., 0] * geo.scale + geo.pad_x
    y1 = boxes_xyxy[..., 1] * geo.scale + geo.pad_y
    x2 = boxes_xyxy[..., 2] * geo.scale + geo.pad_x
    y2 = boxes_xyxy[..., 3] * geo.scale + geo.pad_y
    return np.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), axis=-1) / geo.size


class Preprocessor:
    def __init__(
        self,
        size: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        pad_value: int = PAD_VALUE,
    ) -> None:
        self.size = size
        self.pad_value = pad_value
        self.mean, self.std = tuple(mean), tuple(std)
        # (x / 255 - mean) / std  ==  x * gain + offset, per channel
        self._gain = (1.0 / (255.0 * np.asarray(std, np.float32))).reshape(3, 1, 1)
        self._offset = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).reshape(3, 1, 1)
        self._canvas = np.full((size, size, 3), pad_value, np.uint8)  # HWC RGB
        self._out = np.empty((1, 3, size, size), np.float32)
        self._geo: Letterbox | None = None

    def __call__(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """frame (H, W, 3) uint8 BGR -> (1, 3, S, S) float32 (a reused buffer) and its geometry.

        The returned array is overwritten by the next call; copy it if it must outlive the frame.
        """
        canvas, geo = self.letterbox(frame_bgr)
        return self.normalise(canvas), geo

    def letterbox(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The first half: frame -> (S, S, 3) uint8 RGB canvas (a reused buffer).

        Calibration stores these canvases (4x smaller than floats) and normalises them later with
        `normalise`, so its inputs are bit-identical to what the runtime feeds the graph.
        """
        import cv2

        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 BGR frame, got {frame_bgr.shape} {frame_bgr.dtype}"
            )
        h, w = frame_bgr.shape[:2]
        geo = self._geo
        if geo is None or (geo.frame_w, geo.frame_h) != (w, h):
            geo = self._geo = letterbox_geometry(w, h, self.size)
            self._canvas[:] = self.pad_value
        region = self._canvas[geo.pad_y : geo.pad_y + geo.new_h, geo.pad_x : geo.pad_x + geo.new_w]
        resized = cv2.resize(frame_bgr, (geo.new_w, geo.new_h), interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=region)
        return self._canvas, geo

    def normalise(self, canvas_rgb: np.ndarray) -> np.ndarray:
        """The second half: (S, S, 3) uint8 RGB canvas -> (1, 3, S, S) float32 (a reused buffer)."""
        chw = canvas_rgb.transpose(2, 0, 1)  # (3, S, S) view
        np.multiply(chw, self._gain, out=self._out[0])
        self._out[0] += self._offset
        return self._out
