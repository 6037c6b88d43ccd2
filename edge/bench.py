"""`edge-bench --engine PATH [--json FILE]`: speed figures of one bundle, each a ratio measured in
this one run (the machines are shared and noisy, so absolute times are only context):

- caption latency at 48 tokens: KV cache vs the no-cache decoder (`--no-cache-decoder`, the whole
  prefix in one call per token, as a decoder without a cache runs), and vs replaying `dec_step`
  over the prefix (the runtime's own reference path);
- with `--backends`: ONNX Runtime and OpenVINO (f32, bf16, and the `--int8` / `--int8-s8` /
  `--int8-openvino` bundles) side by side (`backend_bench.py`);
- pipeline throughput (capture + detect + events + captions + alert writing) vs a bare `hoi` loop
  over the same frames;
- `hoi` latency: ONNX Runtime vs torch eager on the same weights, when `--checkpoint` is given
  (torch runs in a child process: importing torch slows ONNX Runtime by 20-30%);
- with `--int8 PLAN`: `hoi`, decoder step and whole anomalous frame, INT8 vs FP32 (same model);
- per-stage p50/p95, cold start (bundle checks + sessions + first frame), peak RSS of `edge-run`
  itself (a child process on the same video) and of the benchmark process.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from h2a.edge.backend_bench import CAPTION_TOKENS, anomalous_frame, bench_backends, bench_no_cache, timeit_ms
from h2a.runtime.bundle import load_bundle
from h2a.runtime.cli import run_main
from h2a.runtime.engine import SPIN_MODES, BackendOptions, Engine
from h2a.runtime.errors import H2AError

#: The figures outside `--backends` are ONNX Runtime's, whatever else is installed.
ORT = BackendOptions("onnxruntime")
#: The pipeline run logs no status line (its figures come from its stats).
STATUS_NEVER = float("inf")


def _frames(size: tuple[int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), (0, 0), 3)
    return [np.roll(base, 4 * i, axis=1) for i in range(count)]


def bench_caption(engine: Engine, repeats: int) -> dict[str, float]:
    det = engine.detect(_frames((640, 480), 1)[0])
    tokens = min(CAPTION_TOKENS, engine.manifest.decoder.max_len - 1)
    enc = engine.encode_caption(det)
    args = (enc["cross_k"], enc["cross_v"], enc["memory_bias"])
    cached = timeit_ms(lambda: engine.decoder.decode(*args, tokens, True, False), repeats)
    full = timeit_ms(lambda: engine.decoder.decode(*args, tokens, False, False), max(1, repeats // 3))
    encode = timeit_ms(lambda: engine.encode_caption(det), repeats)
    return {
        "tokens": tokens,
        "kv_cache_ms": cached,
        "recompute_ms": full,
        "kv_speedup": full / cached,
        "cap_encoder_ms": encode,
        "per_token_ms": cached / tokens,
    }


def bench_int8(fp32: Engine, int8: Engine, repeats: int) -> dict[str, Any]:
    """INT8 vs FP32 of the same model, interleaved in this one run."""
    size = fp32.manifest.preprocess.input_size
    images = np.random.default_rng(2).standard_normal((1, 3, size, size)).astype(np.float32)
    frame = _frames((640, 480), 1)[0]
    tokens = min(CAPTION_TOKENS, fp32.manifest.decoder.max_len - 1)
    out: dict[str, Any] = {"tokens": tokens}
    for name, fn in (
        ("hoi", lambda e: lambda: e.hoi.run({"images": images})),
        ("anomalous_frame", lambda e: lambda: anomalous_frame(e, frame, tokens)),
    ):
        f32, i8 = timeit_ms(fn(fp32), repeats), timeit_ms(fn(int8), repeats)
        out[name] = {"fp32_ms": f32, "int8_ms": i8, "speedup": f32 / i8}
    f32c, i8c = bench_caption(fp32, repeats), bench_caption(int8, repeats)
    out["dec_step"] = {
        "fp32_ms": f32c["per_token_ms"],
        "int8_ms": i8c["per_token_ms"],
        "speedup": f32c["per_token_ms"] / i8c["per_token_ms"],
    }
    out["precision"] = {n: g.precision for n, g in int8.manifest.graphs.items()}
    return out


def bench_pipeline(engine: Engine, frames: list[np.ndarray], workdir: Path) -> dict[str, Any]:
    from h2a.edge.config import ConfigWatcher
    from h2a.edge.pipeline import PipelineOptions, build_pipeline
    from h2a.edge.sources import SourceSpec

    video = workdir / "bench.avi"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 25, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    decoded = []
    cap = cv2.VideoCapture(str(video))
    while True:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(f)
    t0 = time.perf_counter()
    for f in decoded:
        engine.detect(f)
    bare_fps = len(decoded) / (time.perf_counter() - t0)
    m = engine.manifest
    # every type opens at once and the score keeps peaking: the caption worker is kept busy
    watcher = ConfigWatcher(
        None, m.labels.anomalies, dict(m.thresholds.anomaly), {a: 0.0 for a in m.labels.anomalies}
    )
    pipeline = build_pipeline(
        engine,
        SourceSpec("file", str(video), False),
        watcher,
        PipelineOptions(workdir / "alerts", status_every=STATUS_NEVER),
        str(m.provenance.get("model_sha256", "")),
    )
    logging.getLogger("h2a").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    stats = pipeline.run()
    pipe_fps = stats.get("frames_processed") / (time.perf_counter() - t0)
    return {
        "frames": len(decoded),
        "bare_hoi_fps": bare_fps,
        "pipeline_fps": pipe_fps,
        "efficiency": pipe_fps / bare_fps,
        "captions": stats.get("captions"),
        "alerts_written": stats.get("alerts_written"),
        "stages": stats.percentiles(),
    }


#: Runs edge-run in the child and reports the child's own high-water mark. `ru_maxrss` of a child
#: cannot be used: a forked child starts with the parent's pages, and Linux carries that peak
#: across exec, so it would report this benchmark's RSS, not edge-run's.
_RSS_CHILD = """
import sys
from h2a.edge.run_cli import main
code = main(sys.argv[1:])
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")]
print("VmHWM_kB", hwm[0] if hwm else 0)
sys.exit(code)
"""


def edge_run_peak_rss_mb(bundle_path: Path, video: Path, frames: int) -> float | None:
    """Peak RSS of the product itself: `edge-run` in a child process on the bench video (this
    process also holds benchmark-only state). None where /proc is not available."""
    args = ["--engine", str(bundle_path), "--source", str(video), "--max-frames", str(frames), "--dry-run"]
    child = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, *args], capture_output=True, text=True, check=False
    )
    if child.returncode != 0:
        raise H2AError(f"edge-run for the RSS figure failed: {child.stderr.strip().splitlines()[-1:]}")
    for line in child.stdout.splitlines():
        if line.startswith("VmHWM_kB"):
            kb = int(line.split()[1])
            return kb / 1024 if kb else None
    return None


def bench_torch(checkpoint: Path, engine: Engine, repeats: int) -> dict[str, float]:
    size = engine.manifest.preprocess.input_size
    images = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    ort_ms = timeit_ms(lambda: engine.hoi.run({"images": images}), repeats)
    child = subprocess.run(
        [sys.executable, "-m", "h2a.export_tools.evaluation.torch_latency", str(checkpoint), str(repeats)],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise H2AError(f"torch eager timing failed: {child.stderr.strip().splitlines()[-1:]}")
    torch_ms = float(child.stdout.strip().splitlines()[-1])
    return {"ort_ms": ort_ms, "torch_eager_ms": torch_ms, "speedup": torch_ms / ort_ms}


def run(
    bundle_path: Path,
    frames: int,
    repeats: int,
    checkpoint: Path | None,
    threads: int,
    int8_path: Path | None = None,
    hoi_spin: str = "auto",
    no_cache_decoder: Path | None = None,
    backends: bool = False,
    int8_s8_path: Path | None = None,
    int8_openvino_path: Path | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    bundle = load_bundle(bundle_path)
    engine = Engine(bundle, threads=threads, hoi_spin=hoi_spin, options=ORT)
    engine.detect(_frames((640, 480), 1)[0])
    cold = time.perf_counter() - t0
    size = bundle.manifest.preprocess.input_size
    images = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    result: dict[str, Any] = {
        "bundle": str(bundle_path),
        "preset": bundle.manifest.provenance.get("preset"),
        "precision": {n: g.precision for n, g in bundle.manifest.graphs.items()},
        "hoi_spin": hoi_spin,  # the INT8 engine below uses the same mode
        "cold_start_s": cold,
        "hoi_ms": timeit_ms(lambda: engine.hoi.run({"images": images}), repeats),
        "caption": bench_caption(engine, repeats),
    }
    if no_cache_decoder is not None:
        result["no_cache_decoder"] = bench_no_cache(engine, no_cache_decoder, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        result["pipeline"] = bench_pipeline(engine, _frames((640, 480), frames), Path(tmp))
        result["edge_run_peak_rss_mb"] = edge_run_peak_rss_mb(bundle_path, Path(tmp) / "bench.avi", frames)
    if checkpoint is not None:
        result["torch"] = bench_torch(checkpoint, engine, repeats)
    # Peak RSS is read before the INT8 engine doubles the model in memory.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if int8_path is not None:
        int8 = Engine(load_bundle(int8_path), threads=threads, hoi_spin=hoi_spin, options=ORT)
        result["int8"] = bench_int8(engine, int8, repeats)
        del int8
    result["peak_rss_mb"] = peak_rss_mb
    if backends:
        del engine
        result["backends"] = bench_backends(
            bundle_path, int8_path, int8_s8_path, repeats, threads, int8_openvino=int8_openvino_path
        )
    return result


def table(r: dict[str, Any]) -> str:
    c, p = r["caption"], r["pipeline"]
    rows = [
        ("cold start (checks + sessions + 1st frame)", f"{r['cold_start_s']:.2f} s", ""),
        ("hoi latency (ORT)", f"{r['hoi_ms']:.1f} ms", ""),
        (
            f"caption {c['tokens']} tokens: KV cache vs recompute",
            f"{c['kv_cache_ms']:.1f} vs {c['recompute_ms']:.1f} ms",
            f"{c['kv_speedup']:.2f}x",
        ),
        ("tag tokens + cap_encoder (once per caption)", f"{c['cap_encoder_ms']:.1f} ms", ""),
    ]
    if "no_cache_decoder" in r:
        n = r["no_cache_decoder"]
        rows.append(
            (
                f"caption {n['tokens']} tokens: KV cache vs no-cache decoder",
                f"{n['kv_cache_ms']:.1f} vs {n['no_cache_ms']:.1f} ms",
                f"{n['speedup']:.2f}x",
            )
        )
    rows += [
        (
            "pipeline vs bare hoi throughput",
            f"{p['pipeline_fps']:.1f} vs {p['bare_hoi_fps']:.1f} fps",
            f"{100 * p['efficiency']:.0f}%",
        ),
        ("captions / alerts during the pipeline run", f"{p['captions']} / {p['alerts_written']}", ""),
    ]
    for stage, (p50, p95) in p["stages"].items():
        rows.append((f"stage {stage} p50 / p95", f"{p50:.1f} / {p95:.1f} ms", ""))
    if "torch" in r:
        t = r["torch"]
        rows.append(
            (
                "hoi: ORT vs torch eager",
                f"{t['ort_ms']:.1f} vs {t['torch_eager_ms']:.1f} ms",
                f"{t['speedup']:.2f}x",
            )
        )
    if "int8" in r:
        for key, label in (
            ("hoi", "hoi"),
            ("dec_step", "decoder step (per token)"),
            ("anomalous_frame", f"anomalous frame (detect + {r['int8']['tokens']}-token caption)"),
        ):
            v = r["int8"][key]
            rows.append(
                (
                    f"{label}: INT8 vs FP32",
                    f"{v['int8_ms']:.1f} vs {v['fp32_ms']:.1f} ms",
                    f"{v['speedup']:.2f}x",
                )
            )
    for label, b in r.get("backends", {}).items():
        emulated = " (bf16 emulated)" if b.get("emulated_bf16") else ""
        rows.append(
            (
                f"{label}{emulated}: hoi / step / anomalous frame",
                f"{b['hoi_ms']:.1f} / {b['dec_step_ms']:.2f} / {b['anomalous_frame_ms']:.1f} ms",
                f"{b['hoi_speedup']:.2f}x",
            )
        )
    rows.append(
        ("peak RSS of edge-run (child process, same video)", f"{r['edge_run_peak_rss_mb']:.0f} MB", "")
    )
    rows.append(("peak RSS of this benchmark process (before INT8)", f"{r['peak_rss_mb']:.0f} MB", ""))
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:>24}  {c_:>7}" for a, b, c_ in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", type=Path, required=True)
    p.add_argument("--json", type=Path, help="write all figures here")
    p.add_argument("--frames", type=int, default=120, help="frames in the pipeline run (default 120)")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per figure (median)")
    p.add_argument("--checkpoint", type=Path, help="the same model's checkpoint, for ORT vs torch eager")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads of hoi (0 = one per core)")
    p.add_argument("--int8", type=Path, help="an INT8 bundle of the same model: INT8 vs FP32 ratios")
    p.add_argument("--spin", choices=SPIN_MODES, default="auto", help="as edge-run --spin (default auto)")
    p.add_argument(
        "--no-cache-decoder",
        type=Path,
        metavar="ONNX",
        help="the same model's no-cache decoder (edge-export --no-cache-decoder): KV cache vs it",
    )
    p.add_argument(
        "--backends",
        action="store_true",
        help="ONNX Runtime vs OpenVINO (f32, bf16, INT8) side by side; speed-ups over ONNX Runtime FP32",
    )
    p.add_argument(
        "--int8-s8", type=Path, help="with --backends: a --target tensorrt (symmetric s8 Q/DQ) bundle"
    )
    p.add_argument(
        "--int8-openvino",
        type=Path,
        help="with --backends: a --target openvino bundle (hoi on OpenVINO, captions on ONNX Runtime)",
    )
    args = p.parse_args(argv)
    return run_main("edge-bench", lambda: report(args))


def report(args: argparse.Namespace) -> None:
    result = run(
        args.engine,
        args.frames,
        args.repeats,
        args.checkpoint,
        args.threads,
        args.int8,
        args.spin,
        args.no_cache_decoder,
        args.backends,
        args.int8_s8,
        args.int8_openvino,
    )
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
