"""README's demo table, written from the demo runs' own files, never typed by hand.

    python -m h2a.export_tools.demo_table build/demo build/demo-seed1 build/demo-seed2 --readme README.md

Each folder is a `make demo` output folder (`python -m h2a.export_tools.demo --out DIR --seed N`):
its `eval.json` (FP32 on the test split), `int8_report.json` (the gate), `alarms.json` (false
alarms on held-out normal clips) and `model/model.pt` (the training seed). The table gives every
metric's mean, its range over the runs and each run's value; with `--readme` it replaces what
lies between the two markers in README.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h2a.runtime.cli import run_main
from h2a.runtime.errors import InputError

BEGIN, END = "<!-- demo-table:begin -->", "<!-- demo-table:end -->"


@dataclass(frozen=True)
class Metric:
    key: str
    name: str
    aim: str = ""
    digits: int = 3


METRICS = (
    Metric("anomaly_auc", "anomaly AUC", "≥ 0.95"),
    Metric("anomaly_type_map", "anomaly-type mAP", "≥ 0.90"),
    Metric("hoi_role_map", "HOI role mAP", "≥ 0.3"),
    Metric("normal_false_positive_rate", "normal test frames over an enter threshold"),
    Metric("false_alarms_per_hour", "false alarms per hour, 45 held-out normal clips", digits=1),
    Metric("cider_d", "CIDEr-D (edge caption decoder)", digits=2),
    Metric("what_f1", "What F1", digits=2),
    Metric("who_f1", "Who F1", digits=2),
    Metric("where_f1", "Where F1", digits=2),
    Metric("int8_token_agreement", "INT8 vs FP32 greedy token agreement", "≥ 0.90", digits=2),
    Metric("int8_passed", "INT8 gate passed (1 = yes)", digits=0),
)


def run_values(folder: Path) -> dict[str, Any]:
    """One demo run's numbers, by metric key, plus its seed."""
    path = folder / "eval.json"
    if not path.is_file():
        raise InputError(f"{path}: not found; is {folder} a finished demo run?")
    reports = json.loads(path.read_text())  # edge-eval writes {name: report}, one per evaluated model
    if not isinstance(reports, dict) or len(reports) != 1:
        raise InputError(f"{path}: expected the report of one model, as the demo's edge-eval writes it")
    values: dict[str, Any] = dict(next(iter(reports.values())))
    gate = folder / "int8_report.json"
    if gate.is_file():
        report = json.loads(gate.read_text())
        agreement = report.get("deltas", {}).get("caption_token_agreement")
        if agreement is not None:
            values["int8_token_agreement"] = agreement
        values["int8_passed"] = float(bool(report.get("passed")))
    alarms = folder / "alarms.json"
    if alarms.is_file():
        values["false_alarms_per_hour"] = json.loads(alarms.read_text())["false_alarms_per_hour"]
    model = folder / "model" / "model.pt"
    if model.is_file():
        from h2a.export_tools.checkpoint import read_meta

        stages = read_meta(model).get("stages", {})
        values["seed"] = stages.get("hoi", {}).get("seed", 0)
    return values


def table(runs: list[dict[str, Any]]) -> str:
    seeds = ", ".join(str(r.get("seed", "?")) for r in runs)
    plural = "s" if len(runs) != 1 else ""
    head = f"| | mean | range over {len(runs)} seed{plural} | per seed ({seeds}) | aim |"
    rows = [head, "|---|---|---|---|---|"]
    for m in METRICS:
        values = [float(r[m.key]) for r in runs if isinstance(r.get(m.key), int | float)]
        if not values:
            continue
        fmt = f"{{:.{m.digits}f}}"
        mean = sum(values) / len(values)
        spread = f"{fmt.format(min(values))} – {fmt.format(max(values))}"
        each = " / ".join(fmt.format(v) for v in values)
        rows.append(f"| {m.name} | {fmt.format(mean)} | {spread} | {each} | {m.aim} |")
    return "\n".join(rows)


def replace_between_markers(text: str, body: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise InputError(f"README has no {BEGIN} ... {END} block to replace")
    return text[: start + len(BEGIN)] + "\n" + body + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="h2a-demo-table", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="demo output folders (build/demo, ...)")
    p.add_argument("--readme", type=Path, help="rewrite the table between the markers in this file")
    args = p.parse_args(argv)

    def go() -> None:
        body = table([run_values(folder) for folder in args.runs])
        print(body)
        if args.readme is not None:
            args.readme.write_text(replace_between_markers(args.readme.read_text(), body))
            print(f"updated {args.readme}")

    return run_main("h2a-demo-table", go)


if __name__ == "__main__":
    sys.exit(main())
