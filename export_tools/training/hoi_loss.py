"""The HOI encoder's training loss, after the paper's Eq. 3 (HOTR's set loss):

L = L_loc (L1 + GIoU on matched instance boxes) + L_cls (instance classes, "no object" down-weighted)
  + L_act (focal BCE on every interaction query's actions; unmatched queries learn "no action")
  + L_match (pointer cross-entropy: a matched query's pointers must pick the predicted instances
    its target subject and object were matched to) + L_anomaly (BCE on the image-level types)
  + L_prop (the instance terms on the dense proposals that pick the instance queries, matched on
    their own as in Deformable DETR's two-stage variant)
  + L_dn (the instance terms on the denoising queries, each against the clean instance it was
    noised from, every decoder layer: `denoising.py`).

Box and pointer terms are normalised by the number of targets across all processes, so DDP gives
the same gradients as one process with the whole batch (DETR's recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from h2a.export_tools.data.dataset import Target
from h2a.export_tools.models.hoi_encoder import HOIOutput
from h2a.export_tools.training.box_ops import cxcywh_to_xyxy, generalized_box_iou
from h2a.export_tools.training.denoising import DenoiseQueries
from h2a.export_tools.training.distributed import all_reduce_sum, world_size
from h2a.export_tools.training.matcher import (
    Match,
    MatchCosts,
    match_instances,
    match_interactions,
    target_to_pred,
)


@dataclass(frozen=True)
class LossWeights:
    cls: float = 1.0
    bbox: float = 5.0
    giou: float = 2.0
    action: float = 2.0
    pointer: float = 1.0
    # 4, not 1: the image-level BCE is a small part of a set loss near 5, so the shared features
    # served the boxes and barely separated a talking pair from a fight. On the demo's 2,800 steps
    # (generator 5, seed 0, one thread) 1 -> 4 took anomaly AUC 0.930 -> 0.954, type mAP 0.897 ->
    # 0.934 and talking pairs' median "fighting" score 0.52 -> 0.39; role mAP 0.320 -> 0.309.
    anomaly: float = 4.0
    proposal: float = 1.0  # weight of L_prop against the final layer's instance terms
    denoise: float = 1.0  # weight of L_dn against the final layer's instance terms
    no_object: float = 0.1  # weight of the "no object" class in L_cls
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """Summed focal loss (Lin et al. 2017); the caller normalises."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * loss).sum()


class HOILoss:
    def __init__(self, n_objects: int, weights: LossWeights | None = None, costs: MatchCosts | None = None):
        self.w = weights or LossWeights()
        self.costs = costs or MatchCosts()
        self.n_objects = n_objects
        self.class_weight = torch.ones(n_objects + 1)
        self.class_weight[-1] = self.w.no_object

    def __call__(
        self, out: HOIOutput, targets: list[Target], denoise: DenoiseQueries | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        device = out.boxes.device
        inst = match_instances(out.obj_logits, out.boxes, targets, self.costs)
        inter = match_interactions(out.act_logits, out.sub_ptr, out.obj_ptr, targets, inst, self.costs)
        n_boxes = self._global_count(sum(len(t.labels) for t in targets), device)
        n_pairs = self._global_count(sum(len(t.pairs) for t in targets), device)

        loss_cls, loss_bbox, loss_giou = self._instance_losses(
            out.boxes, out.obj_logits, targets, inst, n_boxes
        )

        # actions on every interaction query; pointers on matched ones
        act_target = torch.zeros_like(out.act_logits, dtype=torch.float32)  # (B, Q, A)
        sub_logits, obj_logits, sub_target, obj_target = [], [], [], []
        for b, (qi, ti) in enumerate(inter):
            tgt = targets[b]
            act_target[b, qi] = tgt.actions[ti].to(device)
            lookup = target_to_pred(inst[b], len(tgt.labels)).to(device)
            sub_logits.append(out.sub_ptr[b, qi])
            obj_logits.append(out.obj_ptr[b, qi])
            sub_target.append(lookup[tgt.pairs[ti, 0].to(device)])
            obj_target.append(lookup[tgt.pairs[ti, 1].to(device)])
        loss_act = (
            sigmoid_focal_loss(out.act_logits.float(), act_target, self.w.focal_alpha, self.w.focal_gamma)
            / n_pairs
        )
        loss_ptr = (
            F.cross_entropy(torch.cat(sub_logits).float(), torch.cat(sub_target), reduction="sum")
            + F.cross_entropy(torch.cat(obj_logits).float(), torch.cat(obj_target), reduction="sum")
        ) / (2 * n_pairs)

        # DETR's auxiliary losses: every earlier instance-decoder layer matched and supervised alike
        for boxes, logits in out.aux:
            aux_inst = match_instances(logits, boxes, targets, self.costs)
            aux_cls, aux_bbox, aux_giou = self._instance_losses(boxes, logits, targets, aux_inst, n_boxes)
            loss_cls = loss_cls + aux_cls
            loss_bbox = loss_bbox + aux_bbox
            loss_giou = loss_giou + aux_giou

        loss_prop = torch.zeros((), device=device)
        if out.proposals is not None:
            boxes, logits = out.proposals
            prop = match_instances(logits, boxes, targets, self.costs)
            p_cls, p_bbox, p_giou = self._instance_losses(boxes, logits, targets, prop, n_boxes)
            loss_prop = self.w.cls * p_cls + self.w.bbox * p_bbox + self.w.giou * p_giou

        loss_dn = torch.zeros((), device=device)
        if denoise is not None:
            for boxes, logits in out.denoised:
                loss_dn = loss_dn + self._denoise_loss(boxes, logits, denoise)

        anomaly_target = torch.stack([t.anomaly for t in targets]).to(device)
        loss_anomaly = F.binary_cross_entropy_with_logits(out.anomaly_logits.float(), anomaly_target)

        w = self.w
        total = (
            w.cls * loss_cls
            + w.bbox * loss_bbox
            + w.giou * loss_giou
            + w.action * loss_act
            + w.pointer * loss_ptr
            + w.anomaly * loss_anomaly
            + w.proposal * loss_prop
            + w.denoise * loss_dn
        )
        parts = {
            "cls": loss_cls,
            "bbox": loss_bbox,
            "giou": loss_giou,
            "act": loss_act,
            "ptr": loss_ptr,
            "anomaly": loss_anomaly,
            "prop": loss_prop,
            "dn": loss_dn,
        }
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _instance_losses(
        self,
        boxes: torch.Tensor,
        logits: torch.Tensor,
        targets: list[Target],
        inst: list[Match],
        n_boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class, L1 and GIoU losses of one decoder layer's instances under its matching `inst`."""
        device = boxes.device
        # classes: every query, matched ones to their class, the rest to "no object"
        cls_target = torch.full(
            logits.shape[:2], logits.shape[-1] - 1, dtype=torch.long, device=device
        )  # (B, N)
        for b, (pi, ti) in enumerate(inst):
            cls_target[b, pi] = targets[b].labels[ti].to(device)
        loss_cls = self._class_loss(logits.flatten(0, 1), cls_target.flatten())
        # boxes of matched instances
        pred = torch.cat([boxes[b, pi] for b, (pi, _) in enumerate(inst)]).float()  # (k, 4)
        tgt = torch.cat([targets[b].boxes[ti] for b, (_, ti) in enumerate(inst)]).to(device)
        return (loss_cls, *self._box_losses(pred, tgt, n_boxes))

    def _class_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits (k, C+1), labels (k,) -> the weighted mean over every process's queries
        (F.cross_entropy's own weighted mean divides by this process's weights only, so DDP's
        average would not be the whole batch's)."""
        weight = self.class_weight.to(logits.device)
        summed = F.cross_entropy(logits.float(), labels, weight, reduction="sum")
        return summed / self._global_total(weight[labels].sum())

    @staticmethod
    def _box_losses(
        pred: torch.Tensor, tgt: torch.Tensor, n_boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L1 and GIoU losses of paired boxes (k, 4), summed and divided by `n_boxes`."""
        loss_bbox = F.l1_loss(pred, tgt, reduction="sum") / n_boxes
        giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(tgt)))
        return loss_bbox, (1 - giou).sum() / n_boxes

    def _denoise_loss(self, boxes: torch.Tensor, logits: torch.Tensor, dn: DenoiseQueries) -> torch.Tensor:
        """One decoder layer's class, L1 and GIoU terms on the denoising queries, each query
        against the clean instance it was made from (no matching), weighted like the others."""
        device = boxes.device
        valid = dn.valid.to(device)  # (B*G, M)
        n = self._global_count(int(valid.sum()), device)
        loss_cls = self._class_loss(logits[valid], dn.target_labels.to(device)[valid])
        loss_bbox, loss_giou = self._box_losses(boxes[valid].float(), dn.target_boxes.to(device)[valid], n)
        return self.w.cls * loss_cls + self.w.bbox * loss_bbox + self.w.giou * loss_giou

    @staticmethod
    def _global_count(local: int, device: torch.device) -> torch.Tensor:
        """Targets over all processes, divided by the world size (DDP averages gradients)."""
        count = all_reduce_sum(torch.tensor(float(local), device=device))
        return (count / world_size()).clamp(min=1.0)

    @staticmethod
    def _global_total(local: torch.Tensor) -> torch.Tensor:
        """A sum over all processes, divided by the world size, like `_global_count`."""
        return (all_reduce_sum(local.detach()) / world_size()).clamp(min=1e-6)
