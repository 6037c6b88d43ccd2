"""Caption losses: the LM loss of the paper's Eq. 4 (teacher-forced next-token cross-entropy) and
knowledge distillation from a larger teacher decoder (KL on temperature-softened logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from h2a.export_tools.models import CaptionModel


class CaptionLM(nn.Module):
    """Caption model + teacher forcing in one forward, so DDP sees a single module."""

    def __init__(self, model: CaptionModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_tokens: torch.Tensor,
        tag_ids: torch.Tensor,
        tag_mask: torch.Tensor,
        tag_boxes: torch.Tensor,
        tokens_in: torch.Tensor,
    ) -> torch.Tensor:
        memory, memory_bias = self.model.encode(image_tokens, tag_ids, tag_mask, tag_boxes)
        cross_k, cross_v = self.model.cross_kv(memory)
        return self.model(tokens_in, cross_k, cross_v, memory_bias)  # (B, P-1, V)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """logits (B, T, V) for targets (B, T); padding does not count."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id)


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    pad_id: int,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """alpha * T^2 * KL(teacher || student) + (1 - alpha) * LM, over non-padding positions."""
    keep = targets.flatten() != pad_id  # (B*T,)
    s = student.flatten(0, 1)[keep].float() / temperature
    t = teacher.flatten(0, 1)[keep].float() / temperature
    kl = (
        F.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
        * temperature**2
    )
    lm = lm_loss(student, targets, pad_id)
    return alpha * kl + (1 - alpha) * lm, kl, lm
