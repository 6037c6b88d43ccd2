"""The TensorRT path's streams, events and hand-offs, run on the CPU against CUDA's ordering rules.

TensorRT and a GPU are not here. `tests/cuda_sim.py` stands in for both: a CUDA whose queued work
runs only when an event or a synchronisation forces it, and a `tensorrt` module whose engines are
the bundle's ONNX graphs on ONNX Runtime, reading and writing device memory as queued operations.
What runs unchanged is ours: `Engine`'s submit/result split, `TrtGraph`'s double-buffered output
slots, the double-buffered upload in `GpuFrameInput`, the image-token hand-off
(`token_handoff.py`) and the device KV cache. A missing event or a buffer reused too early reads
NaN or another frame's data here, so the results below would change.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from h2a.runtime.bundle import load_bundle
from h2a.runtime.bundle_writer import write_bundle
from h2a.runtime.engine import BackendOptions, Detection, Engine
from h2a.runtime.errors import BackendError
from h2a.runtime.manifest import GraphEntry
from h2a.runtime.preprocess import Preprocessor

from .cuda_sim import SimCuda, SimKernel, fake_tensorrt

SCORE = 1e-4  # random weights: keep low-scoring triplets so that captions have tags to read


@pytest.fixture(scope="module")
def trt_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ONNX bundle repackaged as edge-export --backend tensorrt writes one, with each
    "engine" holding the ONNX graph the fake runtime runs."""
    source = load_bundle(tiny_bundle)
    m = source.manifest
    members = {m.tokenizer: source.member(m.tokenizer)}
    graphs = {}
    for name, entry in m.graphs.items():
        members[f"graphs/{name}.engine"] = source.graph_bytes(name)
        graphs[name] = GraphEntry(f"graphs/{name}.engine", entry.precision, "tensorrt-engine")
    trt = {"version": "10.3.0.sim", "compute_capability": [8, 7]}
    manifest = dataclasses.replace(
        m, backend="tensorrt", graphs=graphs, provenance={**m.provenance, "tensorrt": trt}, members={}
    )
    out = tmp_path_factory.mktemp("trt") / "sim.plan"
    write_bundle(out, manifest, members)
    return out


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimCuda]:
    cuda = SimCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda))
    monkeypatch.setattr("h2a.runtime.backends.cuda_memory.open_cuda", lambda prefer="auto": cuda)

    from h2a.runtime.backends.frame_input import GpuFrameInput, open_frame_input

    def frame_input(backend: str, hoi: Any, preprocess: Preprocessor) -> Any:
        if backend != "tensorrt":
            return open_frame_input(backend, hoi, preprocess)
        return GpuFrameInput(cuda, hoi.stream, preprocess, kernel=SimKernel(cuda, preprocess))

    monkeypatch.setattr("h2a.runtime.engine.open_frame_input", frame_input)
    yield cuda
    # the backend module was imported against the fake: forget it, as the fake is gone
    for name in ("h2a.runtime.backends.tensorrt_backend",):
        sys.modules.pop(name, None)


def _frames(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    sizes = [(120, 160), (120, 160), (240, 180), (90, 300), (120, 160), (240, 180), (64, 64), (200, 100)]
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]


def _same(a: Detection, b: Detection) -> None:
    assert a.anomaly == pytest.approx(b.anomaly, abs=1e-5)
    assert [t.words for t in a.triplets] == [t.words for t in b.triplets]
    for x, y in zip(a.triplets, b.triplets, strict=True):
        np.testing.assert_allclose(x.subject_box, y.subject_box, atol=1e-5)
        np.testing.assert_allclose(x.object_box, y.object_box, atol=1e-5)
    assert a.geometry == b.geometry


def _pipelined(engine: Engine, frames: list[np.ndarray]) -> list[Detection]:
    """What edge-run's loop does on the GPU: submit frame t+1, then wait for frame t and keep its
    tokens for a caption that runs later."""
    assert engine.frames_ahead == 1
    kept: list[Detection] = []
    pending = engine.submit(frames[0], SCORE)
    for frame in [*frames[1:], None]:
        following = engine.submit(frame, SCORE) if frame is not None else None
        kept.append(engine.keep_for_caption(engine.result(pending)))
        if following is not None:
            pending = following
    return kept


def test_pipelined_detections_and_captions_equal_onnx_runtime(
    tiny_bundle: Path, trt_bundle: Path, sim: SimCuda
) -> None:
    frames = _frames()
    reference = Engine(load_bundle(tiny_bundle), options=BackendOptions(backend="onnxruntime"))
    expected = [reference.detect(f, SCORE) for f in frames]
    engine = Engine(load_bundle(trt_bundle))
    assert engine.backend == "tensorrt" and engine.frame_input.description.startswith("CUDA kernel")

    got = _pipelined(engine, frames)
    for a, b in zip(got, expected, strict=True):
        _same(a, b)
    # every caption runs after all frames were submitted: the kept tokens outlived them
    for a, b in zip(got, expected, strict=True):
        assert engine.explain(a).tokens == reference.explain(b).tokens
    assert engine.tokens is not None and engine.tokens.kept == len(frames)
    assert engine.tokens.downloaded == 0
    engine.close()


def test_image_tokens_never_cross_to_the_host(trt_bundle: Path, sim: SimCuda) -> None:
    engine = Engine(load_bundle(trt_bundle))
    t, d = engine.manifest.hoi.n_image_tokens, engine.manifest.hoi.d_model
    token_bytes = t * d * 4
    frames = _frames(3)
    detections = _pipelined(engine, frames)
    for detection in detections:
        engine.explain(detection, max_new_tokens=4)
    moved = [(kind, n) for kind, _, n in sim.copies if kind in ("htod", "dtoh")]
    assert ("dtoh", token_bytes) not in moved and ("htod", token_bytes) not in moved
    assert sum(1 for kind, _, n in sim.copies if kind == "dtod" and n == token_bytes) == 3
    # each frame goes up once, as uint8, on the upload stream (not hoi's)
    upload_stream = engine.frame_input.upload_stream  # type: ignore[attr-defined]
    frame_uploads = [n for kind, s, n in sim.copies if kind == "htod" and s == upload_stream]
    assert frame_uploads == [f.nbytes for f in frames]
    assert not [
        n for kind, s, n in sim.copies if kind == "htod" and s != upload_stream and n in frame_uploads
    ]


def test_a_full_token_pool_falls_back_to_the_host_and_stays_right(
    tiny_bundle: Path, trt_bundle: Path, sim: SimCuda
) -> None:
    from h2a.runtime.backends.token_handoff import POOL_SLOTS

    frames = _frames(POOL_SLOTS + 2)
    reference = Engine(load_bundle(tiny_bundle), options=BackendOptions(backend="onnxruntime"))
    engine = Engine(load_bundle(trt_bundle))
    held = _pipelined(engine, frames)  # all held at once: a caption backlog longer than the pool
    assert engine.tokens is not None and engine.tokens.downloaded == 2
    assert sum(isinstance(d.image_tokens, np.ndarray) for d in held) == 2
    for a, frame in zip(held[-3:], frames[-3:], strict=True):
        assert engine.explain(a, 6).tokens == reference.explain(reference.detect(frame, SCORE), 6).tokens
    del held, a  # slots come back when their tokens are garbage
    assert engine.tokens.free_slots() == POOL_SLOTS


def test_tokens_not_kept_are_refused_once_overwritten(trt_bundle: Path, sim: SimCuda) -> None:
    engine = Engine(load_bundle(trt_bundle))
    frames = _frames(3)
    first = engine.detect(frames[0], SCORE)
    engine.explain(first, 2)  # at once, on the detecting thread: fine
    engine.detect(frames[1], SCORE)
    engine.explain(first, 2)  # one frame later its slot is untouched
    engine.detect(frames[2], SCORE)
    with pytest.raises(BackendError, match=r"overwritten by frame 2: call Engine\.keep_for_caption"):
        engine.explain(first, 2)


def test_edge_run_pipeline_on_the_gpu_path_stores_the_alerts_onnx_runtime_does(
    tiny_bundle: Path, trt_bundle: Path, sim: SimCuda, tmp_path: Path
) -> None:
    """The detection loop keeps a frame in flight on the GPU path (`_submit` / `_finish`) and hands
    kept tokens to the caption worker's thread: the same events and captions as on the CPU."""
    from h2a.edge.alert_store import AlertStore
    from h2a.edge.config import ConfigWatcher
    from h2a.edge.pipeline import PipelineOptions, build_pipeline
    from h2a.edge.sources import SourceSpec

    from .test_edge_run_events import flapping_config, noise_video

    video = noise_video(tmp_path / "clip.avi", 30)
    config = flapping_config(tiny_bundle, video, tmp_path / "edge.toml", 30)
    stored = {}
    for name, path in (("cpu", tiny_bundle), ("gpu", trt_bundle)):
        bundle = load_bundle(path)
        engine = Engine(bundle, options=BackendOptions(backend="onnxruntime" if name == "cpu" else "auto"))
        watcher = ConfigWatcher(
            config, bundle.manifest.labels.anomalies, dict(bundle.manifest.thresholds.anomaly)
        )
        spec = SourceSpec("file", str(video), False)
        stats = build_pipeline(engine, spec, watcher, PipelineOptions(tmp_path / name), "test").run()
        assert stats.get("frames_processed") == 30 and stats.get("events_opened") >= 3
        store = AlertStore(tmp_path / name, readonly=True)
        stored[name] = [(a.anomaly, round(a.peak_score, 4), a.caption) for a in store.alerts()]
        store.close()
    assert stored["gpu"] == stored["cpu"] and stored["gpu"]
