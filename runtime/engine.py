"""The model at run time: a checked bundle on a backend, turned into two calls.

`detect(frame)` runs pre-processing, the `hoi` graph and post-processing; `explain(detection)`
builds the HOI tag tokens, runs `cap_encoder` once and greedy-decodes with `dec_step` over the
preallocated KV cache. The pipeline calls them from different threads (detection never waits
for captions); one Engine must not run `detect` on two threads at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from h2a.runtime.backends import GraphRunner
from h2a.runtime.backends.frame_input import FrameInput, open_frame_input
from h2a.runtime.bundle import Bundle
from h2a.runtime.caption_text import CaptionFields, parse_caption
from h2a.runtime.decoding import GreedyDecoder
from h2a.runtime.device_decoding import DeviceGreedyDecoder
from h2a.runtime.errors import BackendError, BundleError, InputError
from h2a.runtime.graphs import check_graph, contract_sizes, graph_spec
from h2a.runtime.postprocess import Triplet, anomaly_probabilities, decode_triplets
from h2a.runtime.preprocess import Letterbox, Preprocessor, boxes_to_frame
from h2a.runtime.tags import build_tag_inputs
from h2a.runtime.tokenizer import CaptionTokenizer


@dataclass
class Detection:
    anomaly: dict[str, float]  # probability per anomaly type
    triplets: list[Triplet]  # best first, boxes on the model input (cx, cy, w, h in [0, 1])
    geometry: Letterbox
    image_tokens: np.ndarray  # (1, T, D), kept for the caption of this frame

    def frame_boxes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Subject and object boxes of each triplet in frame pixels (x1, y1, x2, y2)."""
        out = []
        for t in self.triplets:
            pair = boxes_to_frame(np.array([t.subject_box, t.object_box], np.float32), self.geometry)
            out.append((pair[0], pair[1]))
        return out


@dataclass
class Explanation:
    tokens: list[int]
    text: str
    fields: CaptionFields


def open_graph(
    bundle: Bundle, name: str, providers: Sequence[str] | None, threads: int, spin: bool = False
) -> GraphRunner:
    """Load one graph and check it against the contract (`h2a.runtime.graphs`) before use.
    `threads` and `spin` (busy-wait between ops while a run lasts) apply to ONNX Runtime only."""
    runner = _load_graph(bundle, name, providers, threads, spin)
    m = bundle.manifest
    try:
        check_graph(graph_spec(name, m.decoder.layers), *runner.signature(), contract_sizes(m))
    except BundleError as err:
        raise BundleError(f"{bundle.path}: {err}") from None
    return runner


def _load_graph(
    bundle: Bundle, name: str, providers: Sequence[str] | None, threads: int, spin: bool
) -> GraphRunner:
    backend = bundle.manifest.backend
    if backend == "onnxruntime":
        from h2a.runtime.backends.onnxruntime_backend import DEFAULT_PROVIDERS, OrtGraph

        return OrtGraph(bundle.graph_bytes(name), providers or DEFAULT_PROVIDERS, threads, spin)
    if backend == "tensorrt":
        from h2a.runtime.backends.cuda_memory import open_cuda
        from h2a.runtime.backends.tensorrt_backend import TrtGraph, check_device

        cuda = open_cuda()
        check_device(bundle.manifest.provenance.get("tensorrt") or {}, cuda)
        return TrtGraph(bundle.graph_bytes(name), cuda)
    raise BackendError(f"backend {backend!r} is not supported by this runtime build")


#: Intra-op threads of the caption graphs. One decoder step is ~100 small ops on a single token:
#: a second thread costs more in hand-offs than it gains (measured, base preset on 2 cores: 2.46 ->
#: 2.11 ms per token in FP32, 1.55 -> 1.18 ms in INT8), and the caption worker runs beside
#: detection, which keeps the other core.
CAPTION_THREADS = 1
#: Whether `hoi`'s worker threads spin between ops while a run lasts (they stop when it returns;
#: runtime/backends/onnxruntime_backend.py). "auto" spins where it pays: an INT8 `hoi`, whose
#: transformer is hundreds of short ops. Measured, base preset, 2 cores: INT8 hoi 63 -> 56 ms,
#: bare INT8 detection 15.3 -> 17.2 fps; FP32 hoi unchanged (its ops are long enough that a wake-up
#: does not show) while its pipeline lost 3-4 points of throughput to the spinning thread when
#: captions ran beside it, so FP32 does not spin.
SPIN_MODES = ("auto", "on", "off")
#: Triplets a detection keeps (best first): what snapshots draw and zones judge.
MAX_TRIPLETS = 10


def hoi_spins(bundle: Bundle, mode: str) -> bool:
    if mode not in SPIN_MODES:
        raise InputError(f"spin mode {mode!r}: expected one of {', '.join(SPIN_MODES)}")
    if mode == "auto":
        return bundle.manifest.graphs["hoi"].precision == "int8"
    return mode == "on"


class Engine:
    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        caption_threads: int = CAPTION_THREADS,
        hoi_spin: str = "auto",
    ) -> None:
        """`threads`: ONNX Runtime intra-op threads of `hoi` (0 = one per core); `hoi_spin`: one of
        SPIN_MODES."""
        m = bundle.manifest
        self.manifest = m
        self.hoi = open_graph(bundle, "hoi", providers, threads, hoi_spins(bundle, hoi_spin))
        self.cap_encoder = open_graph(bundle, "cap_encoder", providers, caption_threads)
        step = open_graph(bundle, "dec_step", providers, caption_threads)
        # on the GPU the KV cache stays in device memory (runtime/device_decoding.py)
        self.decoder = (
            DeviceGreedyDecoder(step, m.decoder)  # a TrtGraph
            if m.backend == "tensorrt"
            else GreedyDecoder(step, m.decoder)
        )
        self.tokenizer = CaptionTokenizer(bundle.tokenizer_json())
        p = m.preprocess
        self.preprocess = Preprocessor(p.input_size, tuple(p.mean), tuple(p.std), p.pad_value)
        # what `detect` uses: the CUDA kernel on the TensorRT path where its library loads, else OpenCV
        self.frame_input: FrameInput = open_frame_input(m.backend, self.hoi, self.preprocess)
        self.objects, self.actions, self.anomalies = m.labels.objects, m.labels.actions, m.labels.anomalies
        self.min_triplet_score = m.thresholds.hoi_score

    def detect(
        self, frame_bgr: np.ndarray, min_triplet_score: float | None = None, max_triplets: int = MAX_TRIPLETS
    ) -> Detection:
        """`min_triplet_score` defaults to the bundle's threshold; evaluation lowers it to see the
        whole precision-recall curve."""
        images, geometry = self.frame_input(frame_bgr)
        return self.detect_preprocessed(images, geometry, min_triplet_score, max_triplets)

    def detect_preprocessed(
        self,
        images: Any,  # (1, 3, S, S) float32: a numpy array, or a DevicePointer on the TensorRT path
        geometry: Letterbox,
        min_triplet_score: float | None = None,
        max_triplets: int = MAX_TRIPLETS,
    ) -> Detection:
        """`detect` from an already pre-processed (1, 3, S, S) input (calibration replays these)."""
        out = self.hoi.run({"images": images})
        score = self.min_triplet_score if min_triplet_score is None else min_triplet_score
        return Detection(
            anomaly=anomaly_probabilities(out, self.anomalies),
            triplets=decode_triplets(out, self.objects, self.actions, score, max_triplets=max_triplets),
            geometry=geometry,
            image_tokens=out["image_tokens"],
        )

    def encode_caption(self, detection: Detection) -> dict[str, np.ndarray]:
        """HOI tag tokens of the detection + `cap_encoder`: the cross K/V the decoder reads."""
        ids, mask, boxes = build_tag_inputs(
            detection.triplets, self.tokenizer, self.manifest.decoder.max_tag_tokens
        )
        return self.cap_encoder.run(
            {"image_tokens": detection.image_tokens, "tag_ids": ids, "tag_mask": mask, "tag_boxes": boxes}
        )

    def explain(self, detection: Detection, max_new_tokens: int | None = None) -> Explanation:
        enc = self.encode_caption(detection)
        result = self.decoder.decode(enc["cross_k"], enc["cross_v"], enc["memory_bias"], max_new_tokens)
        text = self.tokenizer.decode(result.tokens)
        return Explanation(result.tokens, text, parse_caption(text))
