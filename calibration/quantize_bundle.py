"""An FP32 bundle + a calibration set -> the INT8 graphs, their manifest entries and the evidence.

Steps: split the calibration set (every 4th frame held out for measuring), record each graph's
real inputs with the FP32 engine (`traces`), calibrate ranges once per graph, search recipes and
float fallbacks per graph (`sensitivity`), then compare whole FP32 and INT8 engines on the
held-out frames (anomaly probabilities and caption tokens). Writing the bundle is the caller's
job (`edge-calibrate quantize`), so this module stays free of the export tools.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from h2a.calibration.calib_set import CalibrationError, CalibrationSet
from h2a.calibration.gate import token_agreement
from h2a.calibration.options import DEFAULT_BUDGETS, GRAPHS
from h2a.calibration.qdq import GRAPH_FLAVOURS, RECIPES, GraphQuantizer, Recipe
from h2a.calibration.sensitivity import (
    Attempt,
    GraphResult,
    Opener,
    SearchClock,
    Threading,
    fp32_session,
    latency_ms,
    output_error,
    search_graph,
    session,
)
from h2a.calibration.traces import Feed, record_feeds
from h2a.calibration.weight_store import model_bytes
from h2a.runtime.bundle import Bundle, backend_available
from h2a.runtime.engine import CAPTION_THREADS, BackendOptions, Engine
from h2a.runtime.manifest import GraphEntry, Manifest
from h2a.runtime.preprocess import letterbox_geometry

HELD_OUT_EVERY = 4
ORT = BackendOptions("onnxruntime")
MIN_FRAMES = 8
#: Each graph is timed as `Engine` runs it by default (an INT8 `hoi` spins: see `hoi_spins`).
RUNTIME_THREADING = {
    "hoi": Threading(0, spin=True),
    "cap_encoder": Threading(CAPTION_THREADS),
    "dec_step": Threading(CAPTION_THREADS),
}
#: The order graphs are searched in: the quick caption graphs first, `hoi` with what time is left.
SEARCH_ORDER = ("cap_encoder", "dec_step", "hoi")
#: Targets whose graphs run on this machine's CPU, so that their speed-up over FP32 is measured
#: here (TensorRT's is not: ONNX Runtime on this CPU says nothing about a GPU).
TIMED_HERE = ("cpu", "openvino")
FIXED_REPEATS = 10
#: Keep every k-th decoder step as a calibration input (bounds memory; positions still vary).
STEP_STRIDE = 2


@dataclass
class QuantizedBundle:
    manifest: Manifest
    graphs: dict[str, bytes]  # member path -> graph bytes, for every graph (INT8 or unchanged FP32)
    results: dict[str, GraphResult]
    held_out: CalibrationSet  # the frames the search measured on, for the whole-engine check

    def failed(self) -> list[str]:
        """Graphs whose recipes all missed their budget: not those the target keeps float, nor
        those whose search the time budget ended first (they stay FP32 by the user's own limit),
        nor those whose INT8 fit ran no faster than FP32."""
        return [
            name
            for name, r in self.results.items()
            if r.chosen is None and r.attempts and not r.out_of_time and not r.not_faster
        ]


def quantize_graphs(
    bundle: Bundle,
    calib: CalibrationSet,
    target: str,
    method: str,
    budgets: dict[str, float] | None = None,
    say: Callable[[str], None] = print,
    time_budget: float | None = None,
    fixed: bool = False,
    progress: bool = False,
    min_speedup: float = 0.0,
    reduce_range: bool = False,
) -> QuantizedBundle:
    """`time_budget`: seconds from the start of this call (recording the inputs and calibrating
    the ranges count too); once spent, no more ranking or bisection happens, each search keeps
    its best fit so far, and graphs not reached get their whole-graph recipes tried only. The
    caption graphs go first: they take seconds, and `hoi`, whose search can take minutes, gets
    what is left. `fixed`: every graph takes its target's first recipe whole, within budget or
    not — the fixed all-INT8 recipe that speed figures on random weights use (their accuracy means
    nothing; the manifest says `search: fixed`). `min_speedup`: on the CPU targets (TIMED_HERE),
    an INT8 graph must run this many times faster than FP32 here or it stays FP32 (ignored for
    TensorRT, whose speed ONNX Runtime on this CPU does not tell). Each graph is quantized in its
    target's flavour (`qdq.GRAPH_FLAVOURS`) and measured (error and speed) where it will run:
    OpenVINO for the `hoi` of `--target openvino`, ONNX Runtime otherwise. `reduce_range`: 7-bit
    weights for CPUs without VNNI (`cpu_features.py`), on the CPU targets only."""
    m = bundle.manifest
    if m.backend != "onnxruntime" or any(g.precision != "fp32" for g in m.graphs.values()):
        raise CalibrationError(f"{bundle.path}: quantize needs an FP32 ONNX bundle (from edge-export)")
    if len(calib) < MIN_FRAMES:
        raise CalibrationError(f"the calibration set has {len(calib)} frames; collect at least {MIN_FRAMES}")
    budgets = {**DEFAULT_BUDGETS, **(budgets or {})}
    reduce_range = reduce_range and target in TIMED_HERE  # CPU runtimes; TensorRT's GPU kernels need no care
    openers = {
        name: openvino_opener() if on_openvino(target, GRAPH_FLAVOURS[target][name]) else session
        for name in SEARCH_ORDER
    }  # before any work: OpenVINO may be missing
    clock = SearchClock(time_budget)
    cal, held = calib.split(HELD_OUT_EVERY)
    engine = Engine(bundle, options=ORT)  # the search measures on ONNX Runtime (sensitivity.py)
    say(f"recording graph inputs on {len(cal)} calibration + {len(held)} held-out frames ...")
    feeds = record_feeds(engine, cal, STEP_STRIDE)
    held_feeds = record_feeds(engine, held, STEP_STRIDE)
    results: dict[str, GraphResult] = {}
    graphs: dict[str, bytes] = {}
    entries: dict[str, GraphEntry] = {}
    with tempfile.TemporaryDirectory(prefix="h2a-quant-") as tmp:
        for name in SEARCH_ORDER:
            flavour = GRAPH_FLAVOURS[target][name]
            quantizer = GraphQuantizer(
                bundle.graph_bytes(name), flavour, method, Path(tmp), name, reduce_range=reduce_range
            )
            recipes = RECIPES[flavour][name][:1] if fixed else RECIPES[flavour][name]
            opener = openers[name]
            if any(r.static_ops for r in recipes):
                say(f"{name}: calibrating ranges ({method}) on {len(feeds[name])} inputs ...")
                quantizer.compute_ranges(feeds[name])
            if fixed:
                result = fixed_recipe(
                    quantizer, recipes, held_feeds[name], budgets[name], RUNTIME_THREADING[name], opener
                )
            else:
                result = search_graph(
                    quantizer, recipes, held_feeds[name], budgets[name], RUNTIME_THREADING[name], say=say,
                    clock=clock, progress=progress,
                    min_speedup=min_speedup if target in TIMED_HERE else 0.0, opener=opener,
                )  # fmt: skip
            results[name] = result
            member = m.graphs[name].member
            if result.chosen is None or result.model is None:
                graphs[member] = bundle.graph_bytes(name)
                entries[name] = m.graphs[name]
                continue
            chosen = result.chosen
            label = chosen.recipe + (f"; float: {', '.join(chosen.kept_float)}" if chosen.kept_float else "")
            graphs[member] = model_bytes(result.model)
            entries[name] = GraphEntry(
                member=member,
                precision="int8",
                quantization=label,
                accuracy_delta={"output_relative_error": chosen.error},
                # ONNX Runtime's own INT8 ops (MatMulIntegerToFloat, u8 activations): it runs there
                runtime="onnxruntime" if flavour == "cpu" else None,
            )
    provenance = {
        **m.provenance,
        "calibration": {
            "target": target,
            "method": method,
            "reduce_range": reduce_range,
            "search": "fixed" if fixed else "sensitivity",
            "seconds": time.monotonic() - clock.started,
            "time_budget_s": time_budget,
            "calibration_set_sha256": calib.sha256,
            "frames": len(cal),
            "held_out_frames": len(held),
            "graphs": {name: results[name].summary() for name in GRAPHS},
        },
    }
    entries = {name: entries[name] for name in GRAPHS}  # the manifest's usual order
    manifest = dataclasses.replace(m, graphs=entries, provenance=provenance, members={})
    return QuantizedBundle(manifest, graphs, results, held)


def fixed_recipe(
    quantizer: GraphQuantizer,
    recipes: list[Recipe],
    held_out: list[Feed],
    budget: float,
    threading: Threading,
    opener: Opener = session,
) -> GraphResult:
    """The graph quantized whole by its first recipe, kept whatever its error (timing only)."""

    reference = session(quantizer.fp32_path.read_bytes(), threading)
    fp32_ms = latency_ms(fp32_session(quantizer, reference, opener, threading), held_out[0], FIXED_REPEATS)
    result = GraphResult(quantizer.name, budget, fp32_ms, None, None)
    if not recipes:  # the target keeps this graph float by design
        return result
    model = quantizer.quantize(recipes[0])
    candidate = opener(model, threading)
    error = output_error(reference, candidate, held_out)
    attempt = Attempt(recipes[0].name, error, [], latency_ms(candidate, held_out[0], FIXED_REPEATS), True)
    result.attempts.append(attempt)
    result.chosen, result.model = attempt, model
    return result


def on_openvino(target: str, flavour: str) -> bool:
    """Whether a graph of this target and flavour runs on OpenVINO (and is timed there)."""
    return target == "openvino" and flavour == "tensorrt"


def openvino_opener() -> Opener:
    """Candidates compiled and run on OpenVINO; one line if it is not installed."""
    if not backend_available("openvino"):
        raise CalibrationError(
            "--target openvino measures hoi on OpenVINO, which is not installed here "
            "(pip install 'hoi2anomaly-edge[openvino]')"
        )
    from h2a.calibration.openvino_session import OvSession

    return OvSession


def compare_engines(fp32: Engine, int8: Engine, held: CalibrationSet) -> dict[str, Any]:
    """Whole-model deltas on held-out frames: anomaly probabilities and caption tokens."""
    size = fp32.manifest.preprocess.input_size
    geometry = letterbox_geometry(size, size, size)
    m = fp32.manifest
    prob_deltas: list[float] = []
    fp32_tokens: list[list[int]] = []
    int8_tokens: list[list[int]] = []
    for images in held.images(m.preprocess.mean, m.preprocess.std):
        a = fp32.detect_preprocessed(images, geometry)
        b = int8.detect_preprocessed(images, geometry)
        prob_deltas.append(max(abs(a.anomaly[k] - b.anomaly[k]) for k in a.anomaly))
        # Both decoders caption the same (FP32) detection, so this isolates the caption graphs.
        b_on_a = dataclasses.replace(a, image_tokens=b.image_tokens)
        fp32_tokens.append(fp32.explain(a).tokens)
        int8_tokens.append(int8.explain(b_on_a).tokens)
    return {
        "frames": len(held),
        "anomaly_prob_max_delta": float(np.max(prob_deltas)),
        "anomaly_prob_mean_delta": float(np.mean(prob_deltas)),
        "caption_token_agreement": token_agreement(fp32_tokens, int8_tokens),
    }


def engine_output_error(reference: Engine, candidate: Engine, frames_bgr: list[np.ndarray]) -> float:
    """Output error of the candidate's `hoi` against the reference's on given frames (e.g. labelled
    images the calibration never saw), whatever backend and precision each runs: the direct
    symptom of ranges fitted to the wrong frames, or of a precision too coarse for the model."""
    from h2a.calibration.instance_match import worst_output_error

    errors = []
    for frame in frames_bgr:
        images = reference.preprocess(frame)[0].copy()
        errors.append(
            worst_output_error(reference.hoi.run({"images": images}), candidate.hoi.run({"images": images}))
        )
    return float(np.mean(errors))
