"""The model at run time: a checked bundle on a backend, turned into two calls.

`detect(frame)` runs pre-processing, the `hoi` graph and post-processing; `explain(detection)`
builds the HOI tag tokens, runs `cap_encoder` once and greedy-decodes with `dec_step` over the
preallocated KV cache. The pipeline calls them from different threads (detection never waits
for captions); one Engine must not run `detect` on two threads at once.

`detect` is `submit` then `result`. On the TensorRT path the two are apart: the pipeline submits
frame t+1 (its upload starts on its own stream) before it waits for frame t, so the upload
overlaps frame t's inference (`frames_ahead` says how many frames a caller may submit ahead), and
`keep_for_caption` hands a frame's image tokens to `cap_encoder` device to device
(`runtime/backends/token_handoff.py`). On the CPU backends `submit` does the whole work.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from h2a.runtime.backends import DeviceGraphRunner, GraphRunner
from h2a.runtime.backends.frame_input import FrameInput, open_frame_input
from h2a.runtime.backends.token_handoff import DeviceTokens, TokenPool
from h2a.runtime.bundle import BACKEND_MODULES, Bundle, backend_available
from h2a.runtime.caption_text import CaptionFields, parse_caption
from h2a.runtime.cpu_features import int8_weight_warning
from h2a.runtime.decoding import GreedyDecoder
from h2a.runtime.device_decoding import DeviceGreedyDecoder
from h2a.runtime.errors import BackendError, BundleError, InputError
from h2a.runtime.graphs import check_graph, contract_sizes, graph_spec
from h2a.runtime.postprocess import Triplet, anomaly_probabilities, decode_triplets
from h2a.runtime.preprocess import Letterbox, Preprocessor, boxes_to_frame
from h2a.runtime.tags import build_tag_inputs
from h2a.runtime.tokenizer import CaptionTokenizer

log = logging.getLogger(__name__)


@dataclass
class Detection:
    anomaly: dict[str, float]  # probability per anomaly type
    triplets: list[Triplet]  # best first, boxes on the model input (cx, cy, w, h in [0, 1])
    geometry: Letterbox
    image_tokens: np.ndarray | DeviceTokens  # (1, T, D), for the caption of this frame (on the GPU path,
    # in device memory: see Engine.keep_for_caption)

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


#: What `--backend` accepts. A bundle of ONNX graphs runs on ONNX Runtime or OpenVINO, except an
#: INT8 bundle quantized for ONNX Runtime (`--target cpu`: com.microsoft ops such as
#: MatMulIntegerToFloat, which OpenVINO's reader gives another output rank); a bundle of TensorRT
#: engines only on TensorRT. `auto`: the bundle's TensorRT engines where it has them, else OpenVINO
#: where it is installed and the bundle suits it, else ONNX Runtime. On OpenVINO, a graph whose
#: manifest entry needs ONNX Runtime (`--target openvino` quantizes the caption graphs that way)
#: runs on ONNX Runtime beside it (`graph_backend`).
RUNTIME_BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")


@dataclass(frozen=True)
class BackendOptions:
    """How the graphs run: which backend, and OpenVINO's precision hint and compile cache."""

    backend: str = "auto"
    precision: str = "auto"  # OpenVINO only: auto | f32 | bf16 (openvino_backend.PRECISION_HINTS)
    cache_dir: Path | None = field(default_factory=lambda: _default_ov_cache())


def _default_ov_cache() -> Path:
    from h2a.runtime.backends.openvino_backend import default_cache_dir

    return default_cache_dir()


def select_backend(bundle: Bundle, requested: str) -> str:
    """The backend that runs this bundle, or one line saying why the requested one cannot."""
    if requested not in RUNTIME_BACKENDS:
        raise InputError(f"backend {requested!r}: expected one of {', '.join(RUNTIME_BACKENDS)}")
    stored = bundle.manifest.backend
    if stored == "tensorrt":
        if requested not in ("auto", "tensorrt"):
            raise BackendError(
                f"{bundle.path} holds TensorRT engines; --backend {requested} runs ONNX bundles only"
            )
        return "tensorrt"
    if requested == "tensorrt":
        raise BackendError(
            f"{bundle.path} holds ONNX graphs; build TensorRT engines from it on the device with "
            "edge-export --backend tensorrt --onnx-bundle"
        )
    for_ort = (bundle.manifest.provenance.get("calibration") or {}).get("target") == "cpu"
    if requested == "auto":
        return "openvino" if backend_available("openvino") and not for_ort else "onnxruntime"
    if requested == "openvino" and for_ort:
        raise BackendError(
            f"{bundle.path} was quantized for ONNX Runtime (edge-calibrate quantize --target cpu: its "
            "fused INT8 ops are ONNX Runtime's own); run it with --backend onnxruntime, or quantize "
            "with --target tensorrt (symmetric s8 Q/DQ), which OpenVINO runs"
        )
    if not backend_available(requested):
        _, how = BACKEND_MODULES[requested]
        raise BackendError(f"--backend {requested}: it is not installed here ({how})")
    return requested


def graph_backend(bundle: Bundle, name: str, backend: str) -> str:
    """The backend one graph runs on when the bundle runs on `backend`: its own where its manifest
    entry needs a runtime (ONNX Runtime's INT8 ops), else the bundle's."""
    needs = bundle.manifest.graphs[name].runtime
    if needs is None or needs == backend or backend == "tensorrt":
        return backend
    if not backend_available(needs):
        _, how = BACKEND_MODULES[needs]
        raise BackendError(
            f"{bundle.path}: graph {name} was quantized for {needs}, which is not installed ({how})"
        )
    return needs


def openvino_bf16_gate_passed(bundle: Bundle) -> bool:
    """Whether `edge-calibrate report --openvino-bf16` passed this bundle (recorded in its manifest)."""
    gate = (bundle.manifest.provenance.get("openvino") or {}).get("bf16_gate") or {}
    return bool(gate.get("passed"))


def open_graph(
    bundle: Bundle,
    name: str,
    providers: Sequence[str] | None,
    threads: int,
    spin: bool = False,
    backend: str = "onnxruntime",
    ov: BackendOptions | None = None,
) -> GraphRunner:
    """Load one graph on `backend` (as `select_backend` resolved it) and check it against the
    contract (`h2a.runtime.graphs`) before use. `providers` and `spin` (busy-wait between ops while
    a run lasts) apply to ONNX Runtime only; `threads` to ONNX Runtime and OpenVINO; `ov` carries
    OpenVINO's resolved precision and cache folder."""
    runner = _load_graph(
        bundle, name, providers, threads, spin, backend, ov or BackendOptions(precision="f32")
    )
    m = bundle.manifest
    try:
        check_graph(graph_spec(name, m.decoder.layers), *runner.signature(), contract_sizes(m))
    except BundleError as err:
        raise BundleError(f"{bundle.path}: {err}") from None
    return runner


def _load_graph(
    bundle: Bundle,
    name: str,
    providers: Sequence[str] | None,
    threads: int,
    spin: bool,
    backend: str,
    ov: BackendOptions,
) -> GraphRunner:
    if backend == "onnxruntime":
        from h2a.runtime.backends.onnxruntime_backend import DEFAULT_PROVIDERS, OrtGraph

        return OrtGraph(bundle.graph_bytes(name), providers or DEFAULT_PROVIDERS, threads, spin)
    if backend == "openvino":
        from h2a.runtime.backends.openvino_backend import OvGraph

        member = bundle.manifest.graphs[name].member
        sha = bundle.manifest.members[member].sha256
        return OvGraph(bundle.graph_bytes(name), sha, ov.precision, threads, ov.cache_dir)
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


#: `hoi` output buffers on the TensorRT path: the frame being waited for and the one queued behind it.
HOI_SLOTS = 2


@dataclass
class PendingDetection:
    """A frame submitted to `hoi`; `Engine.result` waits for it. `run`: the backend's pending run
    (TensorRT), or the outputs themselves (CPU backends, where `submit` did the work)."""

    run: Any
    geometry: Letterbox
    min_triplet_score: float | None
    max_triplets: int
    sequence: int


class Engine:
    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        caption_threads: int = CAPTION_THREADS,
        hoi_spin: str = "auto",
        options: BackendOptions | None = None,
    ) -> None:
        """`threads`: intra-op threads of `hoi` (0 = one per core); `hoi_spin`: one of SPIN_MODES
        (ONNX Runtime); `options`: backend choice and OpenVINO settings (default: `auto`)."""
        m = bundle.manifest
        self.manifest = m
        options = options or BackendOptions()
        self.backend = select_backend(bundle, options.backend)
        self.precision = "default"  # what the graphs' float parts compute in, for logs and benchmarks
        if self.backend == "openvino":
            from h2a.runtime.backends.openvino_backend import resolve_precision

            self.precision = resolve_precision(options.precision, openvino_bf16_gate_passed(bundle))
            options = dataclasses.replace(options, precision=self.precision)

        #: Where each graph runs: the bundle's backend, or ONNX Runtime for a graph made for it.
        self.graph_backends = {name: graph_backend(bundle, name, self.backend) for name in m.graphs}
        if (warning := int8_weight_warning(m, self.graph_backends)) is not None:
            log.warning("%s: %s", bundle.path, warning)

        def load(name: str, graph_threads: int, spin: bool = False) -> GraphRunner:
            return open_graph(
                bundle, name, providers, graph_threads, spin, self.graph_backends[name], options
            )

        self.hoi = load("hoi", threads, hoi_spins(bundle, hoi_spin))
        self.cap_encoder = load("cap_encoder", caption_threads)
        step = load("dec_step", caption_threads)
        # on the GPU the KV cache stays in device memory (runtime/device_decoding.py)
        self.decoder = (
            DeviceGreedyDecoder(cast(DeviceGraphRunner, step), m.decoder)  # a TrtGraph
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
        on_gpu = m.backend == "tensorrt"
        #: Frames a caller may submit before waiting for the oldest (the pipeline overlaps them).
        self.frames_ahead = HOI_SLOTS - 1 if on_gpu else 0
        # the TensorRT graphs, seen as what they are (None on the CPU backends)
        self._gpu_hoi = cast(DeviceGraphRunner, self.hoi) if on_gpu else None
        self._gpu_cap = cast(DeviceGraphRunner, self.cap_encoder) if on_gpu else None
        self.tokens = TokenPool(self._gpu_hoi.cuda) if self._gpu_hoi is not None else None
        self._submitted = 0

    def detect(
        self, frame_bgr: np.ndarray, min_triplet_score: float | None = None, max_triplets: int = MAX_TRIPLETS
    ) -> Detection:
        """`min_triplet_score` defaults to the bundle's threshold; evaluation lowers it to see the
        whole precision-recall curve."""
        return self.result(self.submit(frame_bgr, min_triplet_score, max_triplets))

    def submit(
        self, frame_bgr: np.ndarray, min_triplet_score: float | None = None, max_triplets: int = MAX_TRIPLETS
    ) -> PendingDetection:
        """Start detecting a frame. At most `frames_ahead` earlier submissions may still be waiting
        for `result`, which must be called in submission order."""
        images, geometry = self.frame_input(frame_bgr)
        return self._submit(images, geometry, min_triplet_score, max_triplets)

    def detect_preprocessed(
        self,
        images: Any,  # (1, 3, S, S) float32: a numpy array, or a DevicePointer on the TensorRT path
        geometry: Letterbox,
        min_triplet_score: float | None = None,
        max_triplets: int = MAX_TRIPLETS,
    ) -> Detection:
        """`detect` from an already pre-processed (1, 3, S, S) input (calibration replays these)."""
        return self.result(self._submit(images, geometry, min_triplet_score, max_triplets))

    def _submit(
        self, images: Any, geometry: Letterbox, min_triplet_score: float | None, max_triplets: int
    ) -> PendingDetection:
        sequence = self._submitted
        self._submitted += 1
        if self._gpu_hoi is None:
            run: Any = self.hoi.run({"images": images})
        else:  # TrtGraph: queue it; the image tokens stay on the device
            host = set(self.hoi.output_names) - {"image_tokens"}
            run = self._gpu_hoi.enqueue({"images": images}, host, slot=sequence % HOI_SLOTS)
        return PendingDetection(run, geometry, min_triplet_score, max_triplets, sequence)

    def result(self, pending: PendingDetection) -> Detection:
        if self._gpu_hoi is None:
            out = pending.run
            tokens: np.ndarray | DeviceTokens = out["image_tokens"]
        else:
            out, device = pending.run.wait()
            tokens = DeviceTokens(device["image_tokens"], sequence=pending.sequence)
        score = self.min_triplet_score if pending.min_triplet_score is None else pending.min_triplet_score
        return Detection(
            anomaly=anomaly_probabilities(out, self.anomalies),
            triplets=decode_triplets(
                out, self.objects, self.actions, score, max_triplets=pending.max_triplets
            ),
            geometry=pending.geometry,
            image_tokens=tokens,
        )

    def keep_for_caption(self, detection: Detection) -> Detection:
        """The detection with image tokens that outlive later frames, for a caption on another
        thread. Call it on the detecting thread before submitting the frame after next. CPU
        backends: the detection as it is (its tokens are a host array already)."""
        tokens = detection.image_tokens
        if not isinstance(tokens, DeviceTokens) or tokens.sequence < 0:
            return detection
        assert self.tokens is not None and self._gpu_hoi is not None
        self._check_fresh(tokens)
        kept = self.tokens.keep(tokens.pointer, self._gpu_hoi.stream)
        return dataclasses.replace(detection, image_tokens=kept)

    def _check_fresh(self, tokens: DeviceTokens) -> None:
        if self._submitted - tokens.sequence > HOI_SLOTS:  # frame sequence + HOI_SLOTS reuses its slot
            raise BackendError(
                f"image tokens of frame {tokens.sequence} were overwritten by frame "
                f"{tokens.sequence + HOI_SLOTS}: "
                "call Engine.keep_for_caption before submitting further frames"
            )

    def close(self) -> None:
        """Free the GPU path's buffers, streams and events (CPU backends hold none). Call it after
        the last `result` and caption, while CUDA is still alive (before interpreter exit)."""
        if self._gpu_hoi is None:
            return
        for part in (
            self.frame_input,
            self.decoder,
            self.tokens,
            self.hoi,
            self.cap_encoder,
            self.decoder.step,
        ):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    def encode_caption(self, detection: Detection) -> dict[str, np.ndarray]:
        """HOI tag tokens of the detection + `cap_encoder`: the cross K/V the decoder reads."""
        ids, mask, boxes = build_tag_inputs(
            detection.triplets, self.tokenizer, self.manifest.decoder.max_tag_tokens
        )
        tokens: Any = detection.image_tokens
        if isinstance(tokens, DeviceTokens):
            if tokens.sequence >= 0:
                self._check_fresh(tokens)  # still in hoi's output buffer, complete since `result`
            else:  # kept: cap_encoder's stream waits until the copy on hoi's stream is done
                assert self._gpu_cap is not None
                self._gpu_cap.cuda.stream_wait_event(self._gpu_cap.stream, tokens.ready)
            tokens = tokens.pointer
        return self.cap_encoder.run(
            {"image_tokens": tokens, "tag_ids": ids, "tag_mask": mask, "tag_boxes": boxes}
        )

    def explain(self, detection: Detection, max_new_tokens: int | None = None) -> Explanation:
        enc = self.encode_caption(detection)
        result = self.decoder.decode(enc["cross_k"], enc["cross_v"], enc["memory_bias"], max_new_tokens)
        text = self.tokenizer.decode(result.tokens)
        return Explanation(result.tokens, text, parse_caption(text))
