"""Inputs for each graph, recorded while the FP32 bundle runs on the calibration frames.

`hoi` sees the frames themselves. `cap_encoder` and `dec_step` only ever see what the model
upstream of them produces, so their calibration inputs are recorded from real runs: the image
tokens and HOI tags detected on each frame, and the decoder step's token, position and KV cache
at every position of a real greedy caption (calibrating the step on zero caches would fit ranges
to a cache that never occurs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from h2a.calibration.calib_set import CalibrationError, CalibrationSet
from h2a.runtime.backends import GraphRunner
from h2a.runtime.engine import Engine
from h2a.runtime.graphs import TensorInfo
from h2a.runtime.preprocess import letterbox_geometry

Feed = dict[str, np.ndarray]
#: Triplets below the bundle threshold still make realistic tags for calibration: frames whose
#: triplets are all weak would otherwise calibrate the caption graphs on empty tags only.
TRACE_MIN_TRIPLET_SCORE = 0.01


class RecordingGraph:
    """A GraphRunner that copies every input it is given before running the real graph."""

    def __init__(self, graph: GraphRunner, keep: Callable[[Feed], bool] | None = None) -> None:
        self.graph = graph
        self.keep = keep
        self.feeds: list[Feed] = []

    @property
    def input_names(self) -> list[str]:
        return self.graph.input_names

    @property
    def output_names(self) -> list[str]:
        return self.graph.output_names

    def signature(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        return self.graph.signature()

    def run(self, inputs: Feed) -> Feed:
        if self.keep is None or self.keep(inputs):
            self.feeds.append({k: v.copy() for k, v in inputs.items()})
        return self.graph.run(inputs)


@dataclass
class GraphFeeds:
    hoi: list[Feed]
    cap_encoder: list[Feed]
    dec_step: list[Feed]

    def __getitem__(self, graph: str) -> list[Feed]:
        feeds: list[Feed] = getattr(self, graph)
        return feeds


def record_feeds(
    engine: Engine,
    calib: CalibrationSet,
    step_stride: int = 1,
    max_new_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> GraphFeeds:
    """Run the FP32 engine over every frame and caption it, recording each graph's inputs.

    `step_stride` keeps every k-th decoder position (positions cycle across frames, so every
    position is still represented) to bound memory on long captions.
    """
    m = engine.manifest
    size = m.preprocess.input_size
    if calib.input_size != size:
        raise CalibrationError(
            f"calibration frames are {calib.input_size} px, the bundle's input is {size} px; "
            "collect again with --engine pointing at this bundle"
        )
    geometry = letterbox_geometry(size, size, size)
    counter = {"step": 0}

    def keep_step(_: Feed) -> bool:
        counter["step"] += 1
        return counter["step"] % step_stride == 0

    cap_encoder, step = RecordingGraph(engine.cap_encoder), RecordingGraph(engine.decoder.step, keep_step)
    real_cap_encoder, real_step = engine.cap_encoder, engine.decoder.step
    engine.cap_encoder, engine.decoder.step = cap_encoder, step
    hoi: list[Feed] = []
    try:
        for i, images in enumerate(calib.images(m.preprocess.mean, m.preprocess.std)):
            hoi.append({"images": images})
            det = engine.detect_preprocessed(
                images, geometry, min(TRACE_MIN_TRIPLET_SCORE, engine.min_triplet_score)
            )
            engine.explain(det, max_new_tokens)
            if progress:
                progress(i + 1)
    finally:
        engine.cap_encoder, engine.decoder.step = real_cap_encoder, real_step
    return GraphFeeds(hoi, cap_encoder.feeds, step.feeds)
