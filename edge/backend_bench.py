"""`edge-bench` figures across backends and against a fair decoder baseline, measured in one run.

- Backends side by side: the same bundle(s) on ONNX Runtime and OpenVINO (f32 and bf16; the INT8
  bundles as they are), each as `Engine` runs it in `edge-run`: `hoi` latency, decoder step per
  token and a whole anomalous frame (detect + 48-token caption). Ratios are against ONNX Runtime
  FP32 of this run.
- The KV cache against the no-cache decoder `edge-export --no-cache-decoder` writes: the whole
  prefix in one call per token, which is how a decoder without a cache runs.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from h2a.runtime.backends.onnxruntime_backend import OrtGraph
from h2a.runtime.bundle import backend_available, load_bundle
from h2a.runtime.decoding import pick_next
from h2a.runtime.engine import CAPTION_THREADS, BackendOptions, Engine

CAPTION_TOKENS = 48


def timeit_ms(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times) * 1000


def _frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


def anomalous_frame(engine: Engine, frame: np.ndarray, tokens: int) -> None:
    """What an alert costs: detect, then caption `tokens` tokens (EOS ignored so every engine
    decodes the same length)."""
    enc = engine.encode_caption(engine.detect(frame))
    engine.decoder.decode(enc["cross_k"], enc["cross_v"], enc["memory_bias"], tokens, True, False)


def engine_figures(engine: Engine, repeats: int) -> dict[str, float]:
    """hoi, one decoder step (per token, cached) and a whole anomalous frame, as edge-run runs them."""
    size = engine.manifest.preprocess.input_size
    images = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    frame = _frame()
    tokens = min(CAPTION_TOKENS, engine.manifest.decoder.max_len - 1)
    det = engine.detect(frame)
    enc = engine.encode_caption(det)
    args = (enc["cross_k"], enc["cross_v"], enc["memory_bias"])
    return {
        "hoi_ms": timeit_ms(lambda: engine.hoi.run({"images": images}), repeats),
        "dec_step_ms": timeit_ms(lambda: engine.decoder.decode(*args, tokens, True, False), repeats) / tokens,
        "anomalous_frame_ms": timeit_ms(lambda: anomalous_frame(engine, frame, tokens), repeats),
    }


def variants(
    fp32: Path, int8: Path | None, int8_s8: Path | None, int8_openvino: Path | None = None
) -> list[tuple[str, Path, BackendOptions]]:
    """(label, bundle, how it runs) for every combination this machine can run."""
    ort, ov = BackendOptions("onnxruntime"), backend_available("openvino")
    out = [("onnxruntime fp32", fp32, ort)]
    if ov:
        out += [
            ("openvino f32", fp32, BackendOptions("openvino", "f32")),
            ("openvino bf16", fp32, BackendOptions("openvino", "bf16")),
        ]
    if int8 is not None:  # quantized for ONNX Runtime: OpenVINO refuses it (see select_backend)
        out.append(("onnxruntime int8 u8s8 (cpu)", int8, ort))
    if int8_s8 is not None:
        out.append(("onnxruntime int8 s8s8 (tensorrt q/dq)", int8_s8, ort))
        if ov:
            out.append(("openvino int8 s8s8 (tensorrt q/dq)", int8_s8, BackendOptions("openvino", "f32")))
    if int8_openvino is not None and ov:  # hoi s8 on OpenVINO, the caption graphs u8s8 on ONNX Runtime
        out.append(
            ("openvino int8 mixed (--target openvino)", int8_openvino, BackendOptions("openvino", "f32"))
        )
    return out


def bench_backends(
    fp32: Path,
    int8: Path | None,
    int8_s8: Path | None,
    repeats: int,
    threads: int,
    say: Any = print,
    int8_openvino: Path | None = None,
) -> dict[str, Any]:
    """Each variant's figures and its speed-up over ONNX Runtime FP32 (one engine at a time, so
    memory holds one model)."""
    rows: dict[str, dict[str, float]] = {}
    for label, path, options in variants(fp32, int8, int8_s8, int8_openvino):
        engine = Engine(load_bundle(path), threads=threads, options=options)
        # emulated bf16 (no native support) is many times slower: fewer repeats keep the run short
        slow = engine.precision == "bf16" and not _native_bf16()
        rows[label] = engine_figures(engine, max(2, repeats // 5) if slow else repeats)
        if slow:
            rows[label]["emulated_bf16"] = 1.0
        say(f"  {label}: hoi {rows[label]['hoi_ms']:.1f} ms")
        del engine
        gc.collect()
    base = rows["onnxruntime fp32"]
    for row in rows.values():
        for key in ("hoi", "dec_step", "anomalous_frame"):
            row[f"{key}_speedup"] = base[f"{key}_ms"] / row[f"{key}_ms"]
    return rows


def _native_bf16() -> bool:
    from h2a.runtime.backends.openvino_backend import native_bf16

    return native_bf16()


def bench_no_cache(engine: Engine, no_cache_decoder: Path, repeats: int) -> dict[str, float]:
    """Greedy captions of the same length, KV cache loop vs the no-cache decoder (both ONNX
    Runtime, caption threads as in edge-run); their tokens must agree (a wrong baseline is no
    baseline)."""
    graph = OrtGraph(no_cache_decoder.read_bytes(), intra_op_threads=CAPTION_THREADS)
    c = engine.manifest.decoder
    tokens = min(CAPTION_TOKENS, c.max_len - 1)
    enc = engine.encode_caption(engine.detect(_frame()))
    feed = {"cross_k": enc["cross_k"], "cross_v": enc["cross_v"], "memory_bias": enc["memory_bias"]}

    def no_cache() -> list[int]:
        sequence = [c.bos_id]
        for _ in range(tokens):
            logits = graph.run({"tokens": np.array([sequence], np.int64), **feed})["logits"][0]
            sequence.append(pick_next(logits, sequence[1:], c.no_repeat_ngram))
        return sequence[1:]

    def cached() -> list[int]:
        return engine.decoder.decode(
            enc["cross_k"], enc["cross_v"], enc["memory_bias"], tokens, True, False
        ).tokens

    same = no_cache() == cached()
    cached_ms = timeit_ms(cached, repeats)
    no_cache_ms = timeit_ms(no_cache, max(1, repeats // 3))
    return {
        "tokens": tokens,
        "kv_cache_ms": cached_ms,
        "no_cache_ms": no_cache_ms,
        "speedup": no_cache_ms / cached_ms,
        "tokens_agree": float(same),
    }
