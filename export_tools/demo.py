"""`make demo`: the whole chain on a CPU, cached so a second run takes seconds.

generate scenes -> train the HOI encoder -> train the caption decoder on its frozen features ->
evaluate on the test split -> export the FP32 bundle -> INT8: collect, quantize, accuracy gate ->
render demo videos -> `edge-run` on them with the INT8 bundle -> the alerts it stored.

Each step is skipped when its output is already there and newer than its input (delete
build/demo to start over). Every step is the same CLI a user would run, printed before it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from h2a.calibration.options import DEFAULT_BUDGETS
from h2a.export_tools.checkpoint import load_checkpoint
from h2a.export_tools.data.scenes import GENERATOR_VERSION
from h2a.export_tools.demo_check import check_clips, summary
from h2a.runtime.bundle import load_bundle
from h2a.runtime.errors import BundleError, InputError

DATA_COUNT = 4000
VIDEO_COUNT = 4  # three clips with an event, the fourth normal throughout
CALIBRATION_FRAMES = 64
#: Normal clips the model never saw, for its false alarms per hour (45 x 8 s = 6 minutes).
NORMAL_CLIPS, NORMAL_SEED = 45, 99
#: Epochs: 2,800 HOI steps, then 1,400 caption steps. The caption decoder is trained directly, not
#: distilled (`edge-train distill` still can): on the same HOI encoders (seeds 0 and 1), a
#: teacher (1,000 steps) + student (1,400) took 666 s for CIDEr-D 5.48 / 4.74 and field F1 0.802 /
#: 0.752, direct training 126 s for 5.46 / 4.73 and 0.798 / 0.761. In a fresh-clone `make demo`
#: alone on 2 cores: HOI 858 s, caption 181 s (training 1,039 s, over the 15-minute aim).
HOI_EPOCHS, CAPTION_EPOCHS = 14, 14
#: The tiny decoder (d=64) flips greedy tokens at the default 0.05 output-error budget (token
#: agreement 87% < the gate's 90%); at 0.005 the sensitivity search keeps its most sensitive
#: layers in float and the gate passes (95%). Measured on this demo model.
CAPTION_BUDGETS = ("--budget-cap-encoder", "0.005", "--budget-dec-step", "0.005")
#: The search measures hoi's error on its own held-out calibration frames; with 24 instance
#: queries the gate then measured up to twice as much on the test split (0.150 and 0.110 against
#: the search's 0.099 and 0.058, seeds 0 and 1) and refused both at its 0.1. The search now aims at
#: half the gate's budget; the gate keeps the default (it would otherwise take the search's budget).
HOI_BUDGET = ("--budget-hoi", str(DEFAULT_BUDGETS["hoi"] / 2))
GATE_HOI_ERROR = ("--max-hoi-error", str(DEFAULT_BUDGETS["hoi"]))
#: The demo shows the whole INT8 chain, gate included, on every graph. Its tiny graphs run in
#: 0.2-10 ms, where INT8 and FP32 time within this machine's noise (hoi 3.06 against 2.91 ms in one
#: run, 12.1 against 9.5 ms in another), so the quantizer's speed-up rule would keep a graph FP32 or
#: not by chance.
EVERY_GRAPH_INT8 = ("--min-speedup", "0")
#: A graph that no INT8 recipe brings within its budget stays FP32 (the summary says so) instead of
#: stopping the demo: with 8-bit weights on an AVX2 CPU, seed 1's dec_step (generator 4) still
#: measured 0.0139 against its 0.005 with 13 of its 14 groups in float, and the whole chain failed
#: there (7-bit weights, `--reduce-range`, since bring it to 0.0045).
OVER_BUDGET_STAYS_FP32 = ("--allow-fp32-fallback",)


def run(title: str, module: str, *args: str, check: bool = True) -> int:
    command = module.rsplit(".", 1)[-1]
    print(f"\n== {title}\n   python -m {module} {' '.join(args)}", flush=True)
    started = time.time()
    result = subprocess.run([sys.executable, "-m", module, *args], check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: step '{title}' ({command}) failed with exit code {result.returncode}")
    print(f"   ({time.time() - started:.0f} s)", flush=True)
    return result.returncode


def stages_done(model_dir: Path, data: Path, seed: int) -> set[str]:
    """Stages already trained on this data set with this seed (anything else trains again)."""
    path = model_dir / "model.pt"
    if not path.is_file():
        return set()
    try:  # a checkpoint of an older model (version) does not load: train again
        meta = load_checkpoint(path)[0].meta
    except InputError as err:
        print(f"   {err}")
        return set()
    if meta.get("data_sha256") != hashlib.sha256((data / "annotations.json").read_bytes()).hexdigest():
        return set()
    stages = meta.get("stages", {})
    if stages.get("hoi", {}).get("seed", 0) != seed:
        return set()
    return {name for name, info in stages.items() if info.get("seed", 0) == seed}


def current_data(path: Path, version_key: tuple[str, ...]) -> bool:
    """A generated data set or video set made by this generator version (older ones are made again)."""
    if not path.is_file():
        return False
    value: Any = json.loads(path.read_text())
    for key in version_key:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return bool(value == GENERATOR_VERSION)


def stale(output: Path, source: Path) -> bool:
    if not output.is_file() or output.stat().st_mtime < source.stat().st_mtime:
        return True
    if output.suffix == ".plan":  # a bundle from an older format is rebuilt, not refused later
        try:
            load_bundle(output, require_backend=False)
        except BundleError:
            return True
    return False


def train(data: Path, model: Path, seed: int) -> None:
    done = stages_done(model, data, seed)
    common = ["--data", str(data), "--out", str(model), "--seed", str(seed), "--quiet"]
    if "hoi" not in done:
        run(
            "train the HOI encoder (tiny preset, CPU)",
            "h2a.export_tools.training.cli",
            "hoi",
            "--preset",
            "tiny",
            "--epochs",
            str(HOI_EPOCHS),
            *common,
        )
    if "caption" not in done:
        run(
            "train the edge caption decoder on the frozen HOI encoder",
            "h2a.export_tools.training.cli",
            "caption",
            "--epochs",
            str(CAPTION_EPOCHS),
            *common,
        )


def int8(data: Path, fp32: Path, bundle: Path, out: Path) -> bool:
    """Quantize and gate; True when `bundle` is the INT8 one that passed the gate."""
    calib, report = out / "calib.npz", out / "int8_report.json"
    if stale(calib, fp32):
        run(
            "INT8: collect calibration frames",
            "h2a.calibration.cli",
            "collect",
            "--images",
            str(data / "images"),
            "--frames",
            str(CALIBRATION_FRAMES),
            "--engine",
            str(fp32),
            "--out",
            str(calib),
            "--quiet",
        )
    if stale(bundle, fp32) or stale(report, fp32):
        run(
            "INT8: quantize (CPU flavour) with per-graph error budgets",
            "h2a.calibration.cli",
            "quantize",
            "--engine",
            str(fp32),
            "--calib",
            str(calib),
            "--target",
            "cpu",
            "--out",
            str(bundle),
            *CAPTION_BUDGETS,
            *HOI_BUDGET,
            *EVERY_GRAPH_INT8,
            *OVER_BUDGET_STAYS_FP32,
            "--quiet",
        )
        code = run(
            "INT8: accuracy gate against FP32 on the test split",
            "h2a.calibration.cli",
            "report",
            "--fp32",
            str(fp32),
            "--int8",
            str(bundle),
            "--data",
            str(data),
            "--json",
            str(report),
            *GATE_HOI_ERROR,
            "--quiet",
            check=False,
        )
        if code != 0:
            print("   the INT8 bundle was refused by the gate; the demo runs the FP32 bundle instead")
            shutil.copyfile(fp32, bundle)
            return False
    return json.loads(report.read_text()).get("passed", False) if report.is_file() else False


def stored_alerts(alerts: Path) -> list[dict[str, Any]]:
    """The store's rows as `edge-alerts export` writes them (no alerts: no store, no rows)."""
    if not (alerts / "alerts.db").is_file():
        return []
    result = subprocess.run(
        [sys.executable, "-m", "h2a.edge.alerts_cli", "--alerts", str(alerts), "export", "--jsonl", "-"],
        check=True,
        capture_output=True,
        text=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def render_clips(title: str, folder: Path, count: int, seed: int, *extra: str) -> None:
    """`edge-datagen --video` into `folder`, unless this generator version already made it."""
    if current_data(folder / "videos.json", ("generator_version",)):
        return
    shutil.rmtree(folder, ignore_errors=True)
    run(
        title,
        "h2a.export_tools.data.generate",
        "--out",
        str(folder),
        "--video",
        *extra,
        "--count",
        str(count),
        "--seed",
        str(seed),
        "--quiet",
    )


def false_alarms(bundle: Path, out: Path) -> dict[str, Any]:
    """Alerts the bundle would raise on normal clips it never saw (another seed, so other
    scenes, backdrops and degradations), counted by `edge-tune alarms`."""
    normal, scores, report = out / "normal-heldout", out / "normal.scores", out / "alarms.json"
    render_clips("render held-out normal clips", normal, NORMAL_CLIPS, NORMAL_SEED, "--normal-only")
    run(
        "edge-tune replay on them (cached per bundle)",
        "h2a.edge.tune_cli",
        "replay",
        "--engine",
        str(bundle),
        "--source",
        str(normal / "videos"),
        "--out",
        str(scores),
        "--quiet",
    )
    run("count false alarms", "h2a.edge.tune_cli", "alarms", "--scores", str(scores), "--json", str(report))
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="h2a-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("build/demo"))
    p.add_argument("--bundle", type=Path, default=Path("build/demo.plan"))
    p.add_argument("--seed", type=int, default=0, help="training seed (the data set stays the same)")
    args = p.parse_args(argv)
    started = time.time()
    data, model, videos = args.out / "data", args.out / "model", args.out / "videos"
    fp32 = args.bundle.with_name(args.bundle.stem + "-fp32.plan")
    if not current_data(data / "annotations.json", ("generator", "version")):
        shutil.rmtree(data, ignore_errors=True)
        run(
            "generate the data set (procedural scenes, IAD-Hoi annotations)",
            "h2a.export_tools.data.generate",
            "--out",
            str(data),
            "--count",
            str(DATA_COUNT),
            "--seed",
            "0",
            "--quiet",
        )
    train(data, model, args.seed)
    checkpoint = model / "model.pt"
    report = args.out / "eval.json"
    if stale(report, checkpoint):
        run(
            "evaluate on the test split",
            "h2a.export_tools.evaluation.cli",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--json",
            str(report),
            "--markdown",
            str(args.out / "eval.md"),
            "--quiet",
        )
    if stale(fp32, checkpoint):
        run(
            "export the FP32 bundle",
            "h2a.export_tools.export.cli",
            "--model-dir",
            str(model),
            "--out",
            str(fp32),
        )
    passed = int8(data, fp32, args.bundle, args.out)
    render_clips("render demo videos", videos, VIDEO_COUNT, 1)
    alerts = args.out / "alerts"
    shutil.rmtree(alerts, ignore_errors=True)
    for clip in sorted((videos / "videos").glob("*.mp4")):
        run(
            f"edge-run on {clip.name}",
            "h2a.edge.run_cli",
            "--engine",
            str(args.bundle),
            "--source",
            str(clip),
            "--alerts",
            str(alerts),
        )
    alarms = false_alarms(args.bundle, args.out)
    print("\n== demo model on the generated test split (FP32)")
    print((args.out / "eval.md").read_text())
    if (args.out / "int8_report.json").is_file():
        gate = json.loads((args.out / "int8_report.json").read_text())
        deltas = ", ".join(f"{k} {v:+.4f}" for k, v in gate.get("deltas", {}).items())
        print(f"INT8 gate {'passed' if gate.get('passed') else 'FAILED'}: {deltas}")
    expected = json.loads((videos / "videos.json").read_text())
    print("\n== what the demo videos contain (ground truth)")
    for clip in expected.get("videos", []):
        events = ", ".join(f"{e['type']} frames {e['start_frame']}-{e['end_frame']}" for e in clip["events"])
        print(f"  {clip['file']}: {events or 'no anomaly'}")
    print("\n== alerts that edge-run stored")
    subprocess.run(
        [sys.executable, "-m", "h2a.edge.alerts_cli", "--alerts", str(alerts), "list"], check=False
    )
    print(
        f"\nfalse alarms on {NORMAL_CLIPS} held-out normal clips ({alarms['hours'] * 60:.0f} min of video): "
        f"{alarms['false_alarms']}, {alarms['false_alarms_per_hour']:.1f} per hour at the bundle's thresholds"
    )
    print("\n== does each clip alert as its ground truth says?")
    stored = stored_alerts(alerts)
    print(summary(check_clips(expected.get("videos", []), stored)))
    kind = "INT8" if passed else "FP32"
    print(
        f"\nbundle: {args.bundle} ({kind})   FP32: {fp32}   videos: {videos}/videos   "
        f"alerts: {alerts} (edge-alerts --alerts {alerts} show 1)   total {time.time() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
