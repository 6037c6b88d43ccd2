"""Training samples: image letterboxed exactly as the runtime does, plus DETR/HOTR-style targets.

Augmentations keep boxes right: a random scale/shift (affine, boxes transformed and clipped,
instances that mostly left the frame dropped with their interactions), horizontal flip (the
caption's left/right words swap with it) and colour jitter. The letterbox itself is
`h2a.runtime.preprocess.Preprocessor`, the same code the device runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from h2a.export_tools.data.annotations import Record
from h2a.runtime.preprocess import PAD_VALUE, Preprocessor, boxes_to_canvas

MIN_VISIBLE = 0.5  # fraction of a box's area that must stay in the frame after augmentation


@dataclass(frozen=True)
class Augment:
    flip: float = 0.5
    scale: tuple[float, float] = (0.8, 1.2)
    shift: float = 0.1  # fraction of the frame
    brightness: float = 0.25
    contrast: float = 0.25


@dataclass
class Target:
    boxes: torch.Tensor  # (n, 4) cx, cy, w, h in [0, 1] of the model input
    labels: torch.Tensor  # (n,) object class index
    pairs: torch.Tensor  # (m, 2) subject, object instance index
    actions: torch.Tensor  # (m, A) multi-hot
    anomaly: torch.Tensor  # (K,) multi-hot
    caption: str
    index: int


def swap_left_right(text: str) -> str:
    return re.sub(r"\b(left|right)\b", lambda m: "right" if m.group(1) == "left" else "left", text)


class HOIDataset(Dataset[tuple[torch.Tensor, Target]]):
    def __init__(
        self,
        records: list[Record],
        objects: list[str],
        actions: list[str],
        anomalies: list[str],
        image_size: int,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.records = records
        self.objects = {name: i for i, name in enumerate(objects)}
        self.actions = {name: i for i, name in enumerate(actions)}
        self.anomalies = {name: i for i, name in enumerate(anomalies)}
        self.n_actions, self.n_anomalies = len(actions), len(anomalies)
        self.pre = Preprocessor(image_size)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> np.ndarray:
        image = cv2.imread(str(self.records[index].file), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"{self.records[index].file}: missing or unreadable image")
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        rec = self.records[index]
        image = self.load(index)
        boxes = np.asarray(rec.boxes, np.float32).reshape(-1, 4)
        keep = np.ones(len(boxes), bool)
        caption = rec.caption.get("total", "") and self._caption_text(rec)
        flip = False
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, boxes, keep = self._affine(image, boxes, rng)
            image = self._jitter(image, rng)
            flip = rng.random() < self.augment.flip
        tensor_in, geo = self.pre(image)
        chw = tensor_in[0]  # (3, S, S), a view of the preprocessor's reused buffer
        canvas = boxes_to_canvas(boxes, geo).astype(np.float32)  # (n, 4)
        if flip:
            chw = chw[:, :, ::-1]  # a reversed view, copied below: torch.flip costs 10x more here
            canvas[:, 0] = 1.0 - canvas[:, 0]
            caption = swap_left_right(caption)
        tensor = torch.from_numpy(chw.copy())  # (3, S, S); the copy also leaves the buffer free
        remap = {old: new for new, old in enumerate(np.nonzero(keep)[0].tolist())}
        labels = [self.objects[label] for label, k in zip(rec.labels, keep, strict=True) if k]
        merged: dict[tuple[int, int], np.ndarray] = {}
        for s, o, action in rec.hois:
            if s in remap and o in remap and action in self.actions:
                vec = merged.setdefault((remap[s], remap[o]), np.zeros(self.n_actions, np.float32))
                vec[self.actions[action]] = 1.0
        anomaly = torch.zeros(self.n_anomalies)
        if rec.anomaly_type is not None:
            anomaly[self.anomalies[rec.anomaly_type]] = 1.0
        target = Target(
            boxes=torch.from_numpy(canvas[keep]).clamp(0, 1),
            labels=torch.tensor(labels, dtype=torch.long),
            pairs=torch.tensor(list(merged), dtype=torch.long).reshape(-1, 2),
            actions=torch.from_numpy(np.stack(list(merged.values())))
            if merged
            else torch.zeros(0, self.n_actions),
            anomaly=anomaly,
            caption=caption,
            index=index,
        )
        return tensor, target

    @staticmethod
    def _caption_text(rec: Record) -> str:
        c = rec.caption
        return f"what: {c['what']}. who: {c['who']}. where: {c['where']}. total caption: {c['total']}"

    def _affine(
        self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        aug = self.augment
        assert aug is not None
        h, w = image.shape[:2]
        s = rng.uniform(*aug.scale)
        tx = rng.uniform(-aug.shift, aug.shift) * w + (1 - s) * w / 2
        ty = rng.uniform(-aug.shift, aug.shift) * h + (1 - s) * h / 2
        matrix = np.array([[s, 0, tx], [0, s, ty]], np.float32)
        out = cv2.warpAffine(image, matrix, (w, h), borderValue=(PAD_VALUE,) * 3)
        moved = boxes * s + np.array([tx, ty, tx, ty], np.float32)
        clipped = moved.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
        area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
        keep = area(clipped) >= MIN_VISIBLE * np.maximum(area(moved), 1e-6)
        return out, clipped, keep

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        aug = self.augment
        assert aug is not None
        gain = 1 + rng.uniform(-aug.contrast, aug.contrast)
        bias = 255 * rng.uniform(-aug.brightness, aug.brightness) * 0.5
        return cv2.convertScaleAbs(image, alpha=gain, beta=bias)


def collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    images = torch.stack([b[0] for b in batch])  # (B, 3, S, S)
    return images, [b[1] for b in batch]
