"""The accuracy gate: is an INT8 bundle close enough to its FP32 source to ship?

Pure comparison of two evaluation reports (plain dicts, as `edge-eval` writes them), so the
rule is testable on hand-made numbers and the same in every tool that applies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Budget:
    auc_drop: float = 0.01
    map_drop: float = 0.02
    token_agreement: float = 0.90


@dataclass
class GateResult:
    passed: bool
    failures: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)


def token_agreement(reference: Sequence[Sequence[int]], candidate: Sequence[Sequence[int]]) -> float:
    """Share of caption positions where both decoders wrote the same token (the longer caption
    sets the length, so a caption cut short counts its missing tokens as disagreements)."""
    agree = total = 0
    for a, b in zip(reference, candidate, strict=True):
        agree += sum(x == y for x, y in zip(a, b, strict=False))
        total += max(len(a), len(b), 1)
    return agree / total if total else 1.0


def judge(
    fp32: dict[str, Any],
    int8: dict[str, Any],
    agreement: float | None,
    budget: Budget,
    graph_errors: dict[str, tuple[float, float]] | None = None,
) -> GateResult:
    """`graph_errors`: graph -> (measured output error on the data, its budget). Task metrics can
    hide a broken graph on a weak model (a random-init demo scores the same either way); the
    graph's own output error on the labelled images cannot."""
    deltas: dict[str, float] = {
        key: float(int8[key]) - float(fp32[key])
        for key in ("anomaly_auc", "anomaly_type_map", "hoi_role_map", "cider_d", "fields_f1")
        if key in fp32 and key in int8
    }
    failures = []
    for key in ("anomaly_auc", "anomaly_type_map"):
        if key in deltas and math.isnan(deltas[key]):
            failures.append(f"{key} is undefined on this split (it needs both normal and anomalous images)")
    if -deltas.get("anomaly_auc", 0.0) > budget.auc_drop:
        failures.append(f"anomaly AUC dropped by {-deltas['anomaly_auc']:.4f} (budget {budget.auc_drop})")
    if -deltas.get("anomaly_type_map", 0.0) > budget.map_drop:
        failures.append(
            f"anomaly-type mAP dropped by {-deltas['anomaly_type_map']:.4f} (budget {budget.map_drop})"
        )
    if agreement is not None:
        deltas["caption_token_agreement"] = agreement
        if agreement < budget.token_agreement:
            failures.append(f"caption token agreement {agreement:.1%} is below {budget.token_agreement:.0%}")
    for graph, (error, limit) in (graph_errors or {}).items():
        deltas[f"{graph}_output_error"] = error
        if error > limit:
            failures.append(f"{graph} output error {error:.3f} on the data is over its budget {limit}")
    return GateResult(not failures, failures, deltas)
