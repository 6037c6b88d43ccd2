"""Annotation files: the IAD-Hoi form (ours to write and read) and HICO-DET-style JSON (read).

IAD-Hoi form, one `annotations.json` per data set folder:

    {"format": "iad-hoi", "version": 1, "objects": [...], "actions": [...], "anomalies": [...],
     "images": [{"file": "images/000001.jpg", "width": W, "height": H, "split": "train",
                 "anomaly": true, "anomaly_type": "shooting",
                 "hoi": [[hbox, obox, "person", "gun", "aim"], ...],      # the paper's triplets
                 "instances": [[box, "gun"], ...],                          # every labelled instance
                 "caption": {"what": ..., "who": ..., "where": ..., "total": ...}}]}

Boxes are x1, y1, x2, y2 in pixels. `instances` also lists objects that take part in no
interaction (a gun on a table), which a detector must still learn; when absent, instances are
derived from the triplets' boxes. HICO-DET-style files (as HOTR/QPIC ship them: `file_name`,
`annotations` with `bbox`/`category_id`, `hoi_annotation` with `subject_id`/`object_id`/
`category_id`) are read with label maps from ids to our names; unknown labels are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h2a.runtime.errors import InputError

Box = tuple[float, float, float, float]
FORMAT, VERSION = "iad-hoi", 1
SPLITS = ("train", "val", "test")


@dataclass
class Record:
    """One annotated image, as the training code sees it."""

    file: Path  # absolute
    width: int
    height: int
    split: str
    boxes: list[Box]  # instances
    labels: list[str]
    hois: list[tuple[int, int, str]]  # subject index, object index, action
    anomaly_type: str | None
    caption: dict[str, str] = field(default_factory=dict)

    @property
    def triplets(self) -> list[tuple[Box, Box, str, str, str]]:
        return [(self.boxes[s], self.boxes[o], self.labels[s], self.labels[o], a) for s, o, a in self.hois]


@dataclass
class DataSet:
    root: Path
    objects: list[str]
    actions: list[str]
    anomalies: list[str]
    records: list[Record]

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]


def _same_box(a: Sequence[float], b: Sequence[float]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.5


def _index_of(boxes: list[Box], labels: list[str], box: Sequence[float], label: str) -> int:
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        if lab == label and _same_box(b, box):
            return i
    boxes.append((float(box[0]), float(box[1]), float(box[2]), float(box[3])))
    labels.append(label)
    return len(boxes) - 1


def record_from_iad(entry: dict[str, Any], root: Path) -> Record:
    boxes: list[Box] = []
    labels: list[str] = []
    for box, label in entry.get("instances", []):
        _index_of(boxes, labels, box, label)
    hois = []
    for hbox, obox, hlabel, olabel, action in entry.get("hoi", []):
        hois.append((_index_of(boxes, labels, hbox, hlabel), _index_of(boxes, labels, obox, olabel), action))
    return Record(
        file=root / entry["file"],
        width=int(entry["width"]),
        height=int(entry["height"]),
        split=entry.get("split", "train"),
        boxes=boxes,
        labels=labels,
        hois=hois,
        anomaly_type=entry.get("anomaly_type") if entry.get("anomaly") else None,
        caption=entry.get("caption", {}),
    )


def read_iad(folder: str | Path) -> DataSet:
    folder = Path(folder)
    path = folder / "annotations.json"
    if not path.is_file():
        raise InputError(f"{folder}: no annotations.json (expected an IAD-Hoi data set folder)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if data.get("format") != FORMAT:
        raise InputError(f"{path}: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
    try:
        records = [record_from_iad(entry, folder) for entry in data["images"]]
        return DataSet(folder, list(data["objects"]), list(data["actions"]), list(data["anomalies"]), records)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: malformed entry ({type(err).__name__}: {err})") from None


def write_iad(
    folder: Path,
    objects: Sequence[str],
    actions: Sequence[str],
    anomalies: Sequence[str],
    images: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> Path:
    path = folder / "annotations.json"
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "objects": list(objects),
        "actions": list(actions),
        "anomalies": list(anomalies),
        **(extra or {}),
        "images": images,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)
    return path


def read_hico(
    path: str | Path,
    image_root: str | Path,
    object_names: dict[int, str],
    verb_names: dict[int, str],
    split: str = "train",
) -> list[Record]:
    """HICO-DET-style annotations -> records in our label space (unknown ids dropped)."""
    path, image_root = Path(path), Path(image_root)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read HICO-DET annotations ({err})") from None
    if not isinstance(entries, list):
        raise InputError(f"{path}: HICO-DET annotations must be a list of images")
    try:
        return [_hico_record(entry, image_root, object_names, verb_names, split) for entry in entries]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: not in HICO-DET's layout ({type(err).__name__}: {err})") from None


def _hico_record(
    entry: dict[str, Any],
    image_root: Path,
    object_names: dict[int, str],
    verb_names: dict[int, str],
    split: str,
) -> Record:
    boxes: list[Box] = []
    labels: list[str] = []
    remap: dict[int, int] = {}
    for i, ann in enumerate(entry.get("annotations", [])):
        name = object_names.get(int(ann["category_id"]))
        if name is not None:
            box = tuple(float(v) for v in ann["bbox"])
            if len(box) != 4:
                raise ValueError(f"bbox {ann['bbox']} is not x1, y1, x2, y2")
            remap[i] = len(boxes)
            boxes.append(box)
            labels.append(name)
    hois = []
    for hoi in entry.get("hoi_annotation", []):
        verb = verb_names.get(int(hoi["category_id"]))
        s, o = int(hoi["subject_id"]), int(hoi["object_id"])
        if verb is not None and s in remap and o in remap:
            hois.append((remap[s], remap[o], verb))
    return Record(
        file=image_root / entry["file_name"],
        width=int(entry.get("width", 0)),
        height=int(entry.get("height", 0)),
        split=split,
        boxes=boxes,
        labels=labels,
        hois=hois,
        anomaly_type=None,
    )
