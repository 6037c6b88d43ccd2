"""Sources: a live source that drops and comes back reconnects with back-off and goes on."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from h2a.edge.sources import FrameSource, SourceSpec, gstreamer_available, parse_source


class FakeCapture:
    """Serves `frames` frames (None = a corrupt frame), then drops (read fails)."""

    def __init__(self, frames: list[np.ndarray | None], opens: bool = True) -> None:
        self.frames, self.opens = list(frames), opens

    def isOpened(self) -> bool:
        return self.opens

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.frames:
            return False, None
        frame = self.frames.pop(0)
        return True, frame

    def release(self) -> None:
        pass


def test_live_source_reconnects_after_a_drop_and_a_failed_open() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    sessions = [FakeCapture([img, img, None, img]), FakeCapture([], opens=False), FakeCapture([img, img])]
    opened: list[int] = []

    def opener(spec: SourceSpec) -> FakeCapture:
        opened.append(1)
        return sessions.pop(0) if sessions else FakeCapture([], opens=False)

    got: list[int] = []
    source = FrameSource(
        SourceSpec("url", "rtsp://cam", True),
        freeze_timeout=5,
        reconnect_min=0.01,
        reconnect_max=0.02,
        stop=lambda: len(got) >= 5,
        opener=cast(Any, opener),  # a stand-in for cv2.VideoCapture
    )
    for frame in source:
        got.append(frame.index)
    assert got == [0, 1, 2, 3, 4]  # frames keep coming across the drop
    assert source.reconnects >= 2 and source.bad_frames == 1 and len(opened) >= 3


def test_parse_source_kinds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert parse_source(0, None).kind == "camera"
    assert parse_source(None, "rtsp://10.0.0.2/stream").live
    assert parse_source(None, str(tmp_path)).kind == "folder"
    assert parse_source(None, "/dev/video0").kind == "device"
    assert isinstance(gstreamer_available(), bool)
