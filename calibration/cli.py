"""`edge-calibrate collect | quantize | report`: INT8 bundles from an FP32 bundle, with a gate.

    edge-calibrate collect (--images DIR | --source VIDEO | --camera N) --frames N --out calib.npz
    edge-calibrate quantize --engine fp32.plan --calib calib.npz --target TARGET --out int8.plan
    edge-calibrate report --fp32 A.plan (--int8 B.plan | --openvino-bf16) --data DIR [--json FILE]

`collect` runs anywhere OpenCV does (on site, on the device). `quantize` writes the INT8 bundle
only when every graph fits its error budget on held-out frames. `report` is the accuracy gate on
labelled data: within budget, the measured deltas are written into the INT8 bundle's manifest;
over budget, the bundle is renamed `*.rejected` so it cannot be deployed by mistake.

Each subcommand imports what it needs when it runs: `collect` needs only the device's extras
(`[cpu]` or `[jetson]`: OpenCV, numpy, tqdm); `quantize` needs onnx (the `[export]` extra);
`report` evaluates on labelled data with the desktop evaluation code of `h2a.export_tools`
(`[export]`). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from h2a.calibration import calib_set
from h2a.calibration.cpu_features import CHOICES as CPU_WEIGHT_CHOICES
from h2a.calibration.cpu_features import reduce_range
from h2a.calibration.gate import Budget, judge, token_agreement
from h2a.calibration.options import CALIBRATION_METHOD_NAMES, DEFAULT_BUDGETS, GRAPHS, TARGETS
from h2a.runtime.bundle import Bundle, load_bundle
from h2a.runtime.bundle_writer import write_bundle
from h2a.runtime.cli import require, run_main
from h2a.runtime.engine import BackendOptions, Engine
from h2a.runtime.errors import EXIT_USAGE, H2AError
from h2a.runtime.preprocess import PAD_VALUE

DEFAULT_SIZE = 512
#: Seconds for recording, calibrating and searching before each search keeps its best fit so far
#: (writing the bundle and the held-out comparison come after it, ~13 s on the base preset). On
#: the base preset here, recording and calibrating took 112-169 s before `hoi`'s search began, so
#: a 165 s budget left `hoi` no search at all (it stayed FP32); complete searches ended at 233-270
#: s. 600 lets them finish.
DEFAULT_TIME_BUDGET = 600.0
#: INT8 that is not faster is only less accurate: the base `hoi` on random weights fitted its error
#: budget with 30 groups float and ran 268 ms against FP32's 232 ms. 5% is the search's own
#: margin for timing noise (`sensitivity.SAME_SPEED`).
DEFAULT_MIN_SPEEDUP = 1.05
#: Labelled images on which the gate also compares the INT8 `hoi` graph's raw outputs with FP32.
GRAPH_CHECK_IMAGES = 50


ORT = BackendOptions("onnxruntime")


class GateFailed(H2AError):
    exit_code = 1


def cmd_collect(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    size, pad = args.size, PAD_VALUE
    if args.engine:
        manifest = load_bundle(args.engine, require_backend=False).manifest
        size, pad = manifest.preprocess.input_size, manifest.preprocess.pad_value
    if args.images:
        frames = calib_set.image_folder_frames(args.images, args.frames)
    elif args.source:
        frames = calib_set.video_frames(args.source, args.frames)
    else:
        frames = calib_set.camera_frames(args.camera, args.frames, args.interval)
    bar = tqdm(desc="collect candidates", unit="frame", disable=args.quiet)
    calib, dropped = calib_set.collect(
        frames, args.frames, size, pad, args.dedupe_level, lambda n: bar.update(1)
    )
    bar.close()
    calib_set.save(calib, args.out)
    print(
        f"wrote {args.out}: {len(calib)} frames at {size} px ({dropped} near-duplicates dropped), "
        f"sha256 {calib.sha256[:16]}"
    )


def cmd_quantize(args: argparse.Namespace) -> None:
    require("onnx", "export", "edge-calibrate quantize")
    from tqdm import tqdm

    from h2a.calibration.quantize_bundle import compare_engines, quantize_graphs

    bundle = load_bundle(args.engine)
    calib = calib_set.load(args.calib)
    budgets = {g: getattr(args, f"budget_{g}") for g in GRAPHS}
    say = (lambda _: None) if args.quiet else (lambda line: tqdm.write(line))
    q = quantize_graphs(
        bundle,
        calib,
        args.target,
        args.method,
        budgets,
        say,
        args.time_budget,
        args.fixed_recipe,
        not args.quiet,
        args.min_speedup,
        reduce_range(args.reduce_range),
    )
    failed = q.failed()
    if failed and not args.allow_fp32_fallback and not args.fixed_recipe:
        tried = "; ".join(
            f"{g}: " + ", ".join(f"{a.recipe} error {a.error:.3f}" for a in q.results[g].attempts)
            for g in failed
        )
        raise GateFailed(
            f"no INT8 recipe fits the budget for {', '.join(failed)} ({tried}); bundle not written. "
            "Collect more representative frames, raise --budget-<graph>, or pass --allow-fp32-fallback"
        )
    members = {**q.graphs, bundle.manifest.tokenizer: bundle.member(bundle.manifest.tokenizer)}
    manifest = write_bundle(args.out, q.manifest, members)
    # the INT8 bundle as edge-run runs it: a --target openvino bundle with its hoi on OpenVINO
    int8_options = BackendOptions("openvino", "f32") if args.target == "openvino" else ORT
    held_out = compare_engines(
        Engine(bundle, options=ORT), Engine(load_bundle(args.out), options=int8_options), q.held_out
    )
    calibration = {**manifest.provenance["calibration"], "held_out": held_out}
    manifest = dataclasses.replace(manifest, provenance={**manifest.provenance, "calibration": calibration})
    write_bundle(args.out, manifest, members)
    seconds = manifest.provenance["calibration"]["seconds"]
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, target {args.target}, {args.method}"
        f"{', 7-bit CPU weights' if calibration['reduce_range'] else ''}; "
        f"recorded, calibrated and searched in {seconds:.0f} s of the {args.time_budget:.0f} s time budget)"
    )
    for name in GRAPHS:
        r = q.results[name]
        if r.chosen is None and not r.attempts:
            print(f"  {name:<12} float by design for --target {args.target} (TensorRT builds it FP16)")
        elif r.chosen is None and r.not_faster and r.rejected_over_budget:
            print(
                f"  {name:<12} FP32 (an INT8 try over budget already ran {r.rejected_ms:.2f} ms against "
                f"FP32 {r.fp32_ms:.2f} ms, timed alternately; a fit keeps more in float, so none can be "
                f"{args.min_speedup:g}x faster)"
            )
        elif r.chosen is None and r.not_faster:
            print(
                f"  {name:<12} FP32 (its fastest INT8 fit ran {r.rejected_ms:.2f} ms against FP32 "
                f"{r.fp32_ms:.2f} ms, timed alternately: not {args.min_speedup:g}x faster)"
            )
        elif r.chosen is None and r.out_of_time:
            print(
                f"  {name:<12} FP32 (the time budget ended its search before a recipe fit budget "
                f"{r.budget}; a larger --time-budget lets it finish)"
            )
        elif r.chosen is None:
            print(f"  {name:<12} FP32 (no recipe within budget {r.budget})")
        else:
            c = r.chosen
            kept = f", float: {', '.join(c.kept_float)}" if c.kept_float else ""
            print(
                f"  {name:<12} {c.recipe}{kept}: error {c.error:.4f}, "
                f"{c.latency_ms:.2f} ms vs FP32 {r.fp32_ms:.2f} ms"
            )
    print(
        f"  held-out frames: anomaly probability max delta {held_out['anomaly_prob_max_delta']:.4f}, "
        f"caption token agreement {held_out['caption_token_agreement']:.1%}"
    )
    if args.target == "tensorrt":
        print("  (Q/DQ ONNX for TensorRT: build engines on the device with edge-export --backend tensorrt)")


def cmd_report(args: argparse.Namespace) -> None:
    import cv2

    require("sklearn", "export", "edge-calibrate report")
    from h2a.calibration.quantize_bundle import engine_output_error
    from h2a.export_tools.data.annotations import read_iad
    from h2a.export_tools.evaluation.evaluate import evaluate_engine, markdown

    data = read_iad(args.data)
    fp32 = load_bundle(args.fp32)
    if args.openvino_bf16:  # the same FP32 bundle, computed in bf16 by OpenVINO
        candidate, label, options = fp32, "openvino_bf16", BackendOptions("openvino", "bf16")
    else:
        candidate, label, options = load_bundle(args.int8), "int8", BackendOptions(args.backend)
    engines = {"fp32": Engine(fp32, options=ORT), label: Engine(candidate, options=options)}
    reports: dict[str, dict[str, Any]] = {
        name: evaluate_engine(engine, data, args.split, not args.quiet, True, True)
        for name, engine in engines.items()
    }
    agreement = token_agreement(
        reports["fp32"].pop("caption_tokens", []), reports[label].pop("caption_tokens", [])
    )
    budget = Budget(args.max_auc_drop, args.max_map_drop, args.min_token_agreement)
    records = data.split(args.split)[:GRAPH_CHECK_IMAGES]
    frames = [f for f in (cv2.imread(str(r.file), cv2.IMREAD_COLOR) for r in records) if f is not None]
    error = engine_output_error(engines["fp32"], engines[label], frames)
    hoi_budget = _hoi_budget(candidate) if args.max_hoi_error is None else args.max_hoi_error
    verdict = judge(reports["fp32"], reports[label], agreement, budget, {"hoi": (error, hoi_budget)})
    table = markdown(reports) + f"\n| caption_token_agreement | - | {agreement:.4f} | |"
    print(table)
    result = {"reports": reports, "budget": vars(budget), **dataclasses.asdict(verdict)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    gate = {
        "passed": verdict.passed,
        "data": str(args.data),
        "split": args.split,
        "deltas": verdict.deltas,
        "budget": vars(budget),
        "backend": engines[label].backend,
    }
    if args.openvino_bf16:
        _record_bf16_gate(fp32, gate, verdict.failures)
        return
    if not verdict.passed:
        rejected = args.int8.with_name(args.int8.name + ".rejected")
        args.int8.replace(rejected)
        graphs = (candidate.manifest.provenance.get("calibration") or {}).get("graphs", {})
        tried = "; ".join(
            f"{g}: " + ", ".join(f"{a['recipe']} (error {a['error']:.3f})" for a in r.get("attempts", []))
            for g, r in graphs.items()
        )
        raise GateFailed(
            f"INT8 bundle refused: {'; '.join(verdict.failures)}. Tried: {tried}. Moved to {rejected}"
        )
    _rewrite_provenance(candidate, {"accuracy_gate": gate})
    print(f"gate passed: deltas written into {args.int8}'s manifest")


def _record_bf16_gate(bundle: Bundle, gate: dict[str, Any], failures: list[str]) -> None:
    """The verdict goes into the FP32 bundle either way: `--precision auto` reads it (bf16 only
    after a pass). A refusal leaves the bundle usable in f32, so nothing is renamed."""
    from h2a.runtime.backends.openvino_backend import version

    openvino = {
        **(bundle.manifest.provenance.get("openvino") or {}),
        "bf16_gate": {**gate, "openvino": version()},
    }
    _rewrite_provenance(bundle, {"openvino": openvino})
    if failures:
        raise GateFailed(f"OpenVINO bf16 refused for {bundle.path}: {'; '.join(failures)} (it runs in f32)")
    print(f"gate passed: OpenVINO bf16 recorded in {bundle.path}'s manifest (--precision auto uses it)")


def _rewrite_provenance(bundle: Bundle, update: dict[str, Any]) -> None:
    manifest = dataclasses.replace(bundle.manifest, provenance={**bundle.manifest.provenance, **update})
    members = {name: bundle.member(name) for name in bundle.manifest.members}
    write_bundle(bundle.path, manifest, members)


def _hoi_budget(bundle: Bundle) -> float:
    graphs = (bundle.manifest.provenance.get("calibration") or {}).get("graphs", {})
    return float(graphs.get("hoi", {}).get("budget", DEFAULT_BUDGETS["hoi"]))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-calibrate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="representative frames -> calib.npz")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="a folder of images (searched recursively)")
    src.add_argument("--source", type=Path, help="a video file")
    src.add_argument("--camera", type=int, help="a camera index (on site)")
    c.add_argument("--frames", type=int, required=True, help="frames to keep")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--engine", type=Path, help="take input size and padding from this bundle")
    c.add_argument(
        "--size", type=int, default=DEFAULT_SIZE, help=f"input size without --engine ({DEFAULT_SIZE})"
    )
    c.add_argument("--interval", type=float, default=0.5, help="seconds between camera frames (0.5)")
    c.add_argument(
        "--dedupe-level", type=float, default=calib_set.DEDUPE_LEVEL, help="near-duplicate threshold (0-255)"
    )
    q = sub.add_parser("quantize", help="FP32 bundle + calib.npz -> INT8 bundle")
    q.add_argument("--engine", type=Path, required=True, help="the FP32 bundle")
    q.add_argument("--calib", type=Path, required=True)
    q.add_argument(
        "--target",
        choices=TARGETS,
        required=True,
        help="cpu: ONNX Runtime (u8s8); tensorrt: symmetric s8 Q/DQ for TensorRT; openvino: hoi in s8 "
        "Q/DQ on OpenVINO, the caption graphs as for cpu on ONNX Runtime",
    )
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--method", choices=CALIBRATION_METHOD_NAMES, default="minmax")
    for g in GRAPHS:
        q.add_argument(
            f"--budget-{g.replace('_', '-')}",
            dest=f"budget_{g}",
            type=float,
            default=DEFAULT_BUDGETS[g],
            help=f"output error budget of {g} ({DEFAULT_BUDGETS[g]})",
        )
    q.add_argument("--allow-fp32-fallback", action="store_true", help="keep over-budget graphs in FP32")
    q.add_argument(
        "--time-budget",
        type=float,
        default=DEFAULT_TIME_BUDGET,
        metavar="SECONDS",
        help="seconds for recording, calibrating and searching; then each search keeps its best fit "
        f"so far ({DEFAULT_TIME_BUDGET:.0f})",
    )
    q.add_argument(
        "--min-speedup",
        type=float,
        default=DEFAULT_MIN_SPEEDUP,
        metavar="X",
        help="--target cpu|openvino: an INT8 graph must run X times faster than FP32 here, or it stays FP32 "
        f"(0 keeps any fit within budget; {DEFAULT_MIN_SPEEDUP})",
    )
    q.add_argument(
        "--reduce-range",
        choices=CPU_WEIGHT_CHOICES,
        default="auto",
        help="--target cpu|openvino: 7-bit weights, which x86 CPUs without VNNI (AVX2) need to avoid "
        "int16 overflow; auto: on unless this CPU has VNNI (quantize on the CPU class you deploy to)",
    )
    q.add_argument(
        "--fixed-recipe",
        action="store_true",
        help="no search: every graph quantized whole by the target's first recipe, whatever its error "
        "(speed figures on random weights; never deploy it)",
    )
    r = sub.add_parser("report", help="FP32 vs INT8 on labelled data; the accuracy gate")
    r.add_argument("--fp32", type=Path, required=True)
    candidate = r.add_mutually_exclusive_group(required=True)
    candidate.add_argument("--int8", type=Path, help="the INT8 bundle made from --fp32")
    candidate.add_argument(
        "--openvino-bf16",
        action="store_true",
        help="gate --fp32 itself computed in bf16 by OpenVINO; the verdict is written into its manifest",
    )
    r.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="what runs the INT8 bundle (default onnxruntime; FP32 always runs on ONNX Runtime)",
    )
    r.add_argument("--data", type=Path, required=True, help="IAD-Hoi data set folder")
    r.add_argument("--split", default="test", choices=("train", "val", "test"))
    r.add_argument("--json", type=Path)
    r.add_argument("--markdown", type=Path)
    budget = Budget()
    r.add_argument("--max-auc-drop", type=float, default=budget.auc_drop)
    r.add_argument("--max-map-drop", type=float, default=budget.map_drop)
    r.add_argument("--min-token-agreement", type=float, default=budget.token_agreement)
    r.add_argument(
        "--max-hoi-error",
        type=float,
        help="budget of hoi's output error on the data (default: the one quantize used, else "
        f"{DEFAULT_BUDGETS['hoi']})",
    )
    for s in (c, q, r):
        s.add_argument("--quiet", action="store_true")
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "collect": cmd_collect,
    "quantize": cmd_quantize,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "frames", 1) < 1:
        print("edge-calibrate: error: --frames must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    return run_main("edge-calibrate", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
