"""Greedy decoding in torch: the reference the runtime's ONNX/TensorRT decoding must equal.

Two paths with the same weights: `use_cache=True` runs `CaptionModel.step` over a preallocated
cache exactly as the exported `dec_step` graph is driven; `use_cache=False` runs the teacher-forced
forward over the whole prefix each step. Tests require both to give the same tokens.
"""

from __future__ import annotations

import torch

from h2a.export_tools.models.caption_model import CaptionModel
from h2a.runtime.decoding import pick_next


@torch.no_grad()
def greedy_decode(
    model: CaptionModel,
    memory: torch.Tensor,
    memory_bias: torch.Tensor,
    bos_id: int,
    eos_id: int,
    no_repeat_ngram: int = 0,
    max_new_tokens: int | None = None,
    use_cache: bool = True,
    stop_at_eos: bool = True,
) -> list[int]:
    """Caption one frame: memory (1, M, D), memory_bias (1, M) -> generated ids (no BOS/EOS)."""
    limit = model.cfg.max_len - 1 if max_new_tokens is None else min(max_new_tokens, model.cfg.max_len - 1)
    cross_k, cross_v = model.cross_kv(memory)  # (L, 1, H, M, dh)
    self_k, self_v = model.empty_cache(1)  # (L, 1, H, P, dh)
    sequence = [bos_id]
    for _ in range(limit):
        if use_cache:
            position = len(sequence) - 1
            logits, new_k, new_v = model.step(
                torch.tensor([[sequence[-1]]]),
                torch.tensor([position]),
                self_k,
                self_v,
                cross_k,
                cross_v,
                memory_bias,
            )
            self_k[:, :, :, position] = new_k[:, :, :, 0]
            self_v[:, :, :, position] = new_v[:, :, :, 0]
            last = logits[0]
        else:
            last = model(torch.tensor([sequence]), cross_k, cross_v, memory_bias)[0, -1]
        nxt = pick_next(last.numpy(), sequence[1:], no_repeat_ngram)
        if stop_at_eos and nxt == eos_id:
            break
        sequence.append(nxt)
    return sequence[1:]
