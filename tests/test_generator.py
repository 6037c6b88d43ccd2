"""The procedural data set: deterministic, boxes consistent with pixels, labels consistent."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from h2a.export_tools.captions import where_phrase
from h2a.export_tools.data.annotations import read_iad
from h2a.export_tools.data.figures import Figure
from h2a.export_tools.data.generate import write_images, write_videos
from h2a.export_tools.data.scenes import ANOMALY_SCENES, NORMAL_SCENES, Canvas, SceneGenerator
from h2a.export_tools.taxonomy import ACTIONS, ANOMALIES, OBJECTS

ALL_KINDS = [*NORMAL_SCENES, *ANOMALY_SCENES]


def test_same_seed_same_scenes_other_seed_other_scenes() -> None:
    a, b, c = SceneGenerator(128, 5), SceneGenerator(128, 5), SceneGenerator(128, 6)
    for i in range(5):
        sa, sb, sc = a.scene(i), b.scene(i), c.scene(i)
        assert np.array_equal(sa.image, sb.image)
        assert [x.box for x in sa.instances] == [x.box for x in sb.instances]
        assert sa.caption == sb.caption
        assert not np.array_equal(sa.image, sc.image)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_drawn_pixels_lie_inside_the_boxes(kind: str) -> None:
    gen = SceneGenerator(256, 1)
    for index in range(4):
        scene = gen.scene(index, kind=kind, clutter=False)  # plain grey background, nothing else drawn
        drawn = np.any(scene.image != 128, axis=2)
        covered = np.zeros_like(drawn)
        for inst in scene.instances:
            x1, y1, x2, y2 = (int(v) for v in inst.box)
            covered[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = True
            assert x2 > x1 and y2 > y1
        stray = drawn & ~covered
        # drawing decorations outside instances (the table, crash debris) are allowed only in those scenes
        if kind not in ("weapon_on_table", "car accident"):
            assert stray.sum() == 0, f"{kind}: {stray.sum()} drawn pixels outside every box"
        for inst in scene.instances:  # and every box holds drawn pixels
            x1, y1, x2, y2 = (int(v) for v in inst.box)
            assert drawn[y1:y2, x1:x2].any()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_labels_are_consistent(kind: str) -> None:
    gen = SceneGenerator(256, 2)
    for index in range(6):
        scene = gen.scene(index, kind=kind)
        n = len(scene.instances)
        assert all(inst.label in OBJECTS for inst in scene.instances)
        for s, o, action in scene.hois:
            assert 0 <= s < n and 0 <= o < n and s != o
            assert scene.instances[s].label == "person" and action in ACTIONS
        if kind in ANOMALY_SCENES and scene.hois:
            assert scene.anomaly == kind
        if kind in NORMAL_SCENES:
            assert scene.anomaly is None
            assert "anomaly include" not in scene.caption.total


def test_an_anomaly_scene_whose_victim_left_the_frame_is_drawn_again_not_labelled_normal(
    tmp_path: Path,
) -> None:
    gen = SceneGenerator(256, 0)
    lost = gen.scene(6)  # a car accident whose lying victim was placed outside the frame
    assert lost.kind == "car accident" and lost.anomaly is None and not lost.hois
    staged = gen.staged(6)
    assert staged.kind == "car accident" and staged.anomaly == "car accident" and staged.hois
    assert gen.staged(0).caption == gen.scene(0).caption  # a scene that was staged is kept as drawn

    write_images(tmp_path, 8, 256, seed=0, progress=False)
    raw = json.loads((tmp_path / "annotations.json").read_text())
    for entry in raw["images"]:
        assert (entry["kind"] in ANOMALY_SCENES) == entry["anomaly"], entry["file"]
        if entry["anomaly"]:
            assert entry["anomaly_type"] == entry["kind"] and entry["hoi"]


def test_talkers_keep_their_hands_at_chest_height_where_a_punch_reaches_out_at_the_shoulder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Up to generator 4 a talker held its forearm out to the listener, and the demo model took
    talking pairs (and a crowd with one) for fights."""
    drawn: list[tuple[int, Figure]] = []
    person = Canvas.person

    def recording(self: Canvas, *args: object, **kwargs: object) -> tuple[int, Figure]:
        idx, fig = person(self, *args, **kwargs)  # type: ignore[arg-type]
        drawn.append((idx, fig))
        return idx, fig

    monkeypatch.setattr(Canvas, "person", recording)

    def front_hand_below_head(kind: str, index: int, actions: set[str]) -> list[float]:
        """How far below its head each person in one of `actions` holds its front hand, in heights."""
        drawn.clear()
        scene = SceneGenerator(256, 4).scene(index, kind=kind, clutter=False)
        acting = {s for s, _, a in scene.hois if a in actions}
        return [(f.hand_front[1] - f.head[1]) / f.height for i, f in drawn if i in acting]

    talkers = [
        d for i in range(40) for k in ("talk", "crowd") for d in front_hand_below_head(k, i, {"talk to"})
    ]
    punchers = [d for i in range(40) for d in front_hand_below_head("fighting", i, {"punch"})]
    assert len(talkers) > 60 and len(punchers) > 10
    assert min(talkers) > 0.25  # chest height or lower
    assert max(punchers) < 0.15  # at the shoulder


def test_hard_negative_weapon_is_an_instance_without_interaction() -> None:
    scene = SceneGenerator(256, 3).scene(0, kind="weapon_on_table")
    weapons = [i for i, inst in enumerate(scene.instances) if inst.label in ("gun", "knife", "bat")]
    assert weapons and scene.anomaly is None
    assert not any(o in weapons for _, o, _ in scene.hois)


def test_where_comes_from_the_boxes() -> None:
    assert where_phrase((0.1, 0.5, 0, 0)) == "on the left side of the image"
    assert where_phrase((0.5, 0.5, 0, 0)) == "in the middle of the image"
    assert where_phrase((0.9, 0.5, 0, 0)) == "on the right side of the image"
    assert where_phrase((0.9, 0.1, 0, 0)) == "at the top right of the image"


def test_written_data_set_reads_back_with_splits(tmp_path: Path) -> None:
    write_images(tmp_path, 30, 128, seed=4, progress=False)
    data = read_iad(tmp_path)
    assert len(data.records) == 30
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [24, 3, 3]
    rec = data.records[0]
    image = cv2.imread(str(rec.file))
    assert image is not None and image.shape == (128, 128, 3)
    assert set(rec.caption) == {"what", "who", "where", "total"}
    raw = json.loads((tmp_path / "annotations.json").read_text())
    for entry, record in zip(raw["images"], data.records, strict=True):
        assert len(record.hois) == len(entry["hoi"])  # the paper's triplets survive the round trip
        for (_hbox, _obox, h, o, a), (s, ob, act) in zip(entry["hoi"], record.hois, strict=True):
            assert record.labels[s] == h and record.labels[ob] == o and act == a


def test_videos_hold_their_labelled_events(tmp_path: Path) -> None:
    write_videos(tmp_path, 2, 128, seed=0, progress=False)
    meta = json.loads((tmp_path / "videos.json").read_text())
    clip = meta["videos"][0]
    cap = cv2.VideoCapture(str(tmp_path / clip["file"]))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == clip["frames"]
    event = clip["events"][0]
    assert 0 < event["start_frame"] < event["end_frame"] < frames
    # the same events as clip labels in seconds, read back through the loader edge-tune uses
    from h2a.runtime.labels import load_labels

    labels = load_labels(tmp_path / "labels.json", list(ANOMALIES))
    (first,) = labels[(tmp_path / clip["file"]).resolve()]
    assert first.type == event["type"]
    assert (
        first.start == event["start_frame"] / clip["fps"]
        and first.end == (event["end_frame"] + 1) / clip["fps"]
    )


def test_every_labelled_video_event_shows_an_anomaly(tmp_path: Path) -> None:
    """Some anomaly builders cannot always stage their interaction; the clip's event must still
    name a type (seed 0 at 256 px once gave a null type that edge-tune then refused)."""
    write_videos(tmp_path, 6, 256, seed=0, progress=False)
    from h2a.runtime.labels import load_labels

    labels = load_labels(tmp_path / "labels.json", list(ANOMALIES))
    events = [e for clip in labels.values() for e in clip]
    assert len(events) == 5 and all(e.type in ANOMALIES for e in events)  # every fourth clip stays normal


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "h2a-labels", "version": 2, "clips": []}', "'version' must be one of 1"),
        (
            '{"format": "h2a-labels", "version": 1, "clips": [{"clip": "a.mp4"}]}',
            "missing key 'clips[0].events'",
        ),
        (
            '{"format": "h2a-labels", "version": 1, "clips": [{"clip": "a.mp4", "events": '
            '[{"type": "fighting", "start": 4, "end": 2}]}]}',
            "'clips[0].events[0].end' (2.0) is before its start",
        ),
        (
            '{"format": "h2a-labels", "version": 1, "clips": [{"clip": "a.mp4", "events": '
            '[{"type": "robbery", "start": 1, "end": 2}]}]}',
            "'clips[0].events[0].type' is 'robbery'",
        ),
        ("[1, 2", "not valid JSON"),
    ],
)
def test_bad_label_files_are_refused_with_their_key(tmp_path: Path, text: str, message: str) -> None:
    from h2a.runtime.errors import InputError
    from h2a.runtime.labels import load_labels

    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(InputError, match=None) as err:
        load_labels(path, list(ANOMALIES))
    assert message in str(err.value) and "\n" not in str(err.value)
