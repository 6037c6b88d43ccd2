"""`read_hico` on a small file in HICO-DET's JSON layout as the HOI literature ships it
(PPDM/QPIC `trainval_hico.json`: a list of images, xyxy boxes with COCO category ids, HOIs as
subject/object indices into the image's boxes with 1-based verb ids)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from h2a.export_tools.data.annotations import read_hico
from h2a.runtime.errors import InputError

ENTRIES = [
    {
        "file_name": "HICO_train2015_00000001.jpg",
        "img_id": 1,
        "annotations": [
            {"bbox": [207, 32, 426, 299], "category_id": 1},
            {"bbox": [58, 97, 571, 404], "category_id": 4},  # motorcycle: not in our label space
            {"bbox": [300, 200, 340, 260], "category_id": 49},
        ],
        "hoi_annotation": [
            {"subject_id": 0, "object_id": 1, "category_id": 77},  # ride a motorcycle: dropped
            {"subject_id": 0, "object_id": 2, "category_id": 37},  # hold the knife: kept
            {"subject_id": 0, "object_id": 2, "category_id": 58},  # no_interaction: unknown verb id
        ],
    },
    {"file_name": "HICO_train2015_00000002.jpg", "img_id": 2, "annotations": [], "hoi_annotation": []},
]
OBJECTS = {1: "person", 49: "knife"}
VERBS = {37: "hold", 77: "ride"}


def test_reads_boxes_labels_and_interactions_in_our_label_space(tmp_path: Path) -> None:
    path = tmp_path / "trainval_hico.json"
    path.write_text(json.dumps(ENTRIES))
    records = read_hico(path, tmp_path / "images", OBJECTS, VERBS, split="train")
    assert len(records) == 2
    first = records[0]
    assert first.file == tmp_path / "images" / "HICO_train2015_00000001.jpg"
    assert first.labels == ["person", "knife"]
    assert first.boxes == [(207.0, 32.0, 426.0, 299.0), (300.0, 200.0, 340.0, 260.0)]
    assert first.hois == [(0, 1, "hold")]  # indices follow the kept boxes, not the file's
    assert first.triplets[0][2:] == ("person", "knife", "hold")
    assert first.split == "train" and first.anomaly_type is None
    assert records[1].boxes == [] and records[1].hois == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "cannot read"),
        ('{"file_name": "a.jpg"}', "must be a list"),
        ('[{"annotations": []}]', "KeyError: 'file_name'"),
        ('[{"file_name": "a.jpg", "annotations": [{"bbox": [1, 2, 3], "category_id": 1}]}]', "not x1, y1"),
    ],
)
def test_files_not_in_the_layout_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_hico(path, tmp_path, OBJECTS, VERBS)
