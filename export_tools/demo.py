"""`make demo`: the whole learning chain on a CPU in minutes, cached so a second run is instant.

generate scenes -> train the HOI encoder -> train the caption decoder -> distil it from a larger
teacher -> evaluate on the test split -> export build/demo.plan -> render demo videos.
Each step is skipped when its output already exists (delete build/demo to start over).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from h2a.export_tools.checkpoint import load_checkpoint

DATA_COUNT = 4000
VIDEO_COUNT = 3


def run(title: str, module: str, *args: str) -> None:
    print(f"\n== {title}", flush=True)
    started = time.time()
    result = subprocess.run([sys.executable, "-m", module, *args], check=False)
    if result.returncode != 0:
        raise SystemExit(f"demo: step '{title}' failed (exit {result.returncode})")
    print(f"   ({time.time() - started:.0f} s)", flush=True)


def stages_done(model_dir: Path) -> set[str]:
    path = model_dir / "model.pt"
    if not path.is_file():
        return set()
    ckpt, _ = load_checkpoint(path)
    return set(ckpt.meta.get("stages", {}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="h2a-demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/demo"))
    p.add_argument("--bundle", type=Path, default=Path("build/demo.plan"))
    args = p.parse_args(argv)
    data, model, videos = args.out / "data", args.out / "model", args.out / "videos"
    if not (data / "annotations.json").is_file():
        run(
            "generate the data set",
            "h2a.export_tools.data.generate",
            "--out",
            str(data),
            "--count",
            str(DATA_COUNT),
            "--seed",
            "0",
        )
    done = stages_done(model)
    if "hoi" not in done:
        run(
            "train the HOI encoder (tiny preset, CPU)",
            "h2a.export_tools.training.cli",
            "hoi",
            "--data",
            str(data),
            "--preset",
            "tiny",
            "--out",
            str(model),
        )
    if "caption" not in done:
        run(
            "train the caption model",
            "h2a.export_tools.training.cli",
            "caption",
            "--data",
            str(data),
            "--out",
            str(model),
        )
        run(
            "evaluate before distillation",
            "h2a.export_tools.evaluation.cli",
            "--checkpoint",
            str(model / "model.pt"),
            "--data",
            str(data),
            "--json",
            str(args.out / "eval_caption.json"),
            "--quiet",
        )
    if "distill" not in done:
        run(
            "distil the edge decoder from a larger teacher",
            "h2a.export_tools.training.cli",
            "distill",
            "--data",
            str(data),
            "--out",
            str(model),
        )
    report = args.out / "eval.json"
    if not report.is_file() or report.stat().st_mtime < (model / "model.pt").stat().st_mtime:
        run(
            "evaluate on the test split",
            "h2a.export_tools.evaluation.cli",
            "--checkpoint",
            str(model / "model.pt"),
            "--data",
            str(data),
            "--json",
            str(report),
            "--markdown",
            str(args.out / "eval.md"),
            "--quiet",
        )
    if not args.bundle.is_file() or args.bundle.stat().st_mtime < (model / "model.pt").stat().st_mtime:
        run(
            "export the bundle",
            "h2a.export_tools.export.cli",
            "--model-dir",
            str(model),
            "--out",
            str(args.bundle),
            "--quiet",
        )
    if not (videos / "videos.json").is_file():
        run(
            "render demo videos",
            "h2a.export_tools.data.generate",
            "--out",
            str(videos),
            "--video",
            "--count",
            str(VIDEO_COUNT),
            "--seed",
            "1",
            "--quiet",
        )
    print("\n== demo model on the generated test split")
    print((args.out / "eval.md").read_text())
    (result,) = json.loads(report.read_text()).values()
    for example in result.get("examples", [])[:3]:
        print(f"  generated: {example['caption']}\n  reference: {example['reference']}\n")
    print(f"bundle: {args.bundle}   videos: {videos}/videos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
