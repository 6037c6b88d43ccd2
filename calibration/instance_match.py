"""Compare the HOI encoder's instance outputs as sets, not slot by slot.

The instance decoder's queries are the k most object-like image tokens. A little INT8 noise can
swap the k-th token for the (k+1)-th, or a token for its neighbour that predicts the same box:
the detections stay the same, but the slots move, and a slot-by-slot error would call that a
broken graph and keep whole backbones in float. So before measuring an error, the candidate's
instance slots are put in the order of the reference's, matched on their boxes (greedy, closest
pair first; numpy only, as the calibration tools run on the device too). A slot whose detection
really changed still costs its full error.
"""

from __future__ import annotations

import numpy as np

BOXES = "boxes"
INSTANCE_OUTPUTS = (BOXES, "obj_logits")  # (B, N, ...): one row per instance slot
POINTER_OUTPUTS = ("sub_ptr", "obj_ptr")  # (B, Q, N): the last axis points at instance slots


def greedy_match(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """reference (N, 4), candidate (N, 4) boxes -> order (N,): candidate slot for each reference
    slot, pairing the closest boxes (L1) first."""
    cost = np.abs(reference[:, None, :] - candidate[None, :, :]).sum(-1)  # (N, N)
    order = np.full(len(reference), -1, np.int64)
    for _ in range(len(reference)):
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        order[i] = j
        cost[i, :] = np.inf
        cost[:, j] = np.inf
    return order


def align_instances(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The candidate's outputs with its instance slots in the reference's order (other graphs,
    without a `boxes` output, come back as they are)."""
    if BOXES not in reference or BOXES not in candidate:
        return candidate
    out = {name: value.copy() for name, value in candidate.items()}
    for b in range(reference[BOXES].shape[0]):
        order = greedy_match(reference[BOXES][b], candidate[BOXES][b])  # (N,)
        for name in INSTANCE_OUTPUTS:
            if name in out:
                out[name][b] = candidate[name][b][order]
        for name in POINTER_OUTPUTS:
            if name in out:
                out[name][b] = candidate[name][b][:, order]
    return out


def worst_output_error(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float:
    """The worst output's relative L2 error ||c - r|| / ||r||, instance slots compared as sets."""
    got = align_instances(reference, candidate)
    return max(
        float(np.linalg.norm(got[n] - reference[n]) / (np.linalg.norm(reference[n]) + 1e-12))
        for n in reference
    )
