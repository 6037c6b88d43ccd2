"""`edge-eval --checkpoint CKPT | --engine PLAN --data DIR [--compare OTHER] [--json F] [--markdown F]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from h2a.export_tools.data.annotations import read_iad
from h2a.export_tools.evaluation.evaluate import engine_for, evaluate_engine, markdown
from h2a.runtime.cli import run_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="edge-eval",
        description="Anomaly AUC/mAP, HOI role mAP, CIDEr-D and "
        "What/Who/Where F1 of a checkpoint or a bundle on a data split.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="edge-train's model.pt (exported to a temporary bundle)")
    src.add_argument("--engine", type=Path, help="a plan bundle")
    p.add_argument("--data", type=Path, required=True, help="IAD-Hoi data set folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--compare", type=Path, help="a second checkpoint or bundle (.plan) to evaluate beside it")
    p.add_argument("--no-caption", action="store_true", help="skip caption metrics (faster)")
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument("--markdown", type=Path, help="write the summary table here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    return run_main("edge-eval", lambda: evaluate(args))


def evaluate(args: argparse.Namespace) -> None:
    data = read_iad(args.data)
    reports = {}
    for path in [args.checkpoint or args.engine, *([args.compare] if args.compare else [])]:
        engine, kind = engine_for(path, not args.quiet)
        reports[f"{path.name} ({kind})"] = evaluate_engine(
            engine, data, args.split, not args.quiet, not args.no_caption
        )
    table = markdown(reports)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
