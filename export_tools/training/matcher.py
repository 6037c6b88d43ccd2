"""Hungarian matching of predictions to targets, for instances (DETR) and interactions (HOTR).

Instances are matched on class probability, L1 box distance and GIoU. Interactions are matched
after that: a target triplet's subject and object are the *predicted* instances its target
instances were matched to, and an interaction query costs little when its pointers pick those
instances and its action probabilities agree with the target's actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from h2a.export_tools.data.dataset import Target
from h2a.export_tools.training.box_ops import cxcywh_to_xyxy, generalized_box_iou

Match = tuple[torch.Tensor, torch.Tensor]  # (prediction indices, target indices), both (k,)


@dataclass(frozen=True)
class MatchCosts:
    cls: float = 1.0
    bbox: float = 5.0
    giou: float = 2.0
    action: float = 1.0
    pointer: float = 1.0


def _assign(cost: torch.Tensor) -> Match:
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


@torch.no_grad()
def match_instances(
    obj_logits: torch.Tensor, boxes: torch.Tensor, targets: list[Target], costs: MatchCosts
) -> list[Match]:
    """obj_logits (B, N, C+1), boxes (B, N, 4) -> per image (pred idx, target idx)."""
    probs = obj_logits.float().softmax(-1)  # (B, N, C+1)
    matches = []
    for b, tgt in enumerate(targets):
        if len(tgt.labels) == 0:
            matches.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
            continue
        c_cls = -probs[b][:, tgt.labels]  # (N, n)
        c_box = torch.cdist(boxes[b].float(), tgt.boxes, p=1)  # (N, n)
        c_giou = -generalized_box_iou(cxcywh_to_xyxy(boxes[b].float()), cxcywh_to_xyxy(tgt.boxes))
        matches.append(_assign(costs.cls * c_cls + costs.bbox * c_box + costs.giou * c_giou))
    return matches


def target_to_pred(match: Match, n_targets: int) -> torch.Tensor:
    """Which predicted instance each target instance was matched to -> (n_targets,)."""
    lookup = torch.full((n_targets,), -1, dtype=torch.long)
    lookup[match[1]] = match[0]
    return lookup


@torch.no_grad()
def match_interactions(
    act_logits: torch.Tensor,
    sub_ptr: torch.Tensor,
    obj_ptr: torch.Tensor,
    targets: list[Target],
    inst_matches: list[Match],
    costs: MatchCosts,
) -> list[Match]:
    """act_logits (B, Q, A), sub_ptr/obj_ptr (B, Q, N) -> per image (query idx, target pair idx)."""
    act = act_logits.float().sigmoid()  # (B, Q, A)
    sub, obj = sub_ptr.float().softmax(-1), obj_ptr.float().softmax(-1)  # (B, Q, N)
    matches = []
    for b, tgt in enumerate(targets):
        if len(tgt.pairs) == 0:
            matches.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
            continue
        lookup = target_to_pred(inst_matches[b], len(tgt.labels))
        s_pred, o_pred = lookup[tgt.pairs[:, 0]], lookup[tgt.pairs[:, 1]]  # (m,)
        pos = tgt.actions  # (m, A)
        agree = (act[b] @ pos.t()) / pos.sum(-1).clamp(min=1)  # (Q, m) mean prob of the target's actions
        reject = ((1 - act[b]) @ (1 - pos).t()) / (1 - pos).sum(-1).clamp(min=1)  # (Q, m)
        c_act = -(agree + reject) / 2
        c_ptr = -(sub[b][:, s_pred] + obj[b][:, o_pred]) / 2  # (Q, m)
        matches.append(_assign(costs.action * c_act + costs.pointer * c_ptr))
    return matches
