"""Multi-head attention written out (q/k/v projections, matmul, softmax) rather than
`nn.MultiheadAttention`: the caption graphs need K/V separately (cross K/V computed once per
caption, self K/V cached per step), and explicit MatMul/Softmax nodes are what the INT8 tools
and TensorRT see and decide on.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Additive score for masked positions: finite so FP16 engines hold it and all-masked rows stay finite.
MASK_NEG = -1.0e4


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, N, dh)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = x.shape
        return x.transpose(1, 2).reshape(b, n, self.n_heads * self.head_dim)  # (B, N, D)

    def split_one(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, D) -> (B, H, 1, dh). For one token the head split is a plain reshape; written with
        constant sizes, the decoder step graph gets one Reshape where `split_heads` exports a
        Shape/Gather/Unsqueeze/Concat chain and a Transpose (a third of the step's ops)."""
        return x.view(-1, self.n_heads, 1, self.head_dim)

    def merge_one(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, 1, dh) -> (B, 1, D), the inverse of `split_one`."""
        return x.reshape(-1, 1, self.n_heads * self.head_dim)

    def attend_one(
        self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """`attend` for a single query token (B, 1, D), as the decoder step runs it."""
        q = self.split_one(self.q_proj(query))  # (B, H, 1, dh)
        return self.out_proj(self.merge_one(self._mix(q, k, v, bias)))  # (B, 1, D)

    def project_kv(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split_heads(self.k_proj(keys)), self.split_heads(self.v_proj(values))

    def attend(
        self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query (B, Nq, D) against already-projected k, v (B, H, Nk, dh); bias adds to the scores."""
        q = self.split_heads(self.q_proj(query))  # (B, H, Nq, dh)
        return self.out_proj(self.merge_heads(self._mix(q, k, v, bias)))  # (B, Nq, D)

    def _mix(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-head q (B, H, Nq, dh) against k, v (B, H, Nk, dh) -> (B, H, Nq, dh)."""
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, Nq, Nk)
        if bias is not None:
            scores = scores + bias
        return self.dropout(scores.softmax(dim=-1)) @ v

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        k, v = self.project_kv(keys, values)
        return self.attend(query, k, v, bias)


def padding_bias(mask: torch.Tensor, neg: float) -> torch.Tensor:
    """(B, N) with 1 = keep, 0 = padding  ->  additive bias (B, 1, 1, N).

    A finite `neg` (not -inf) keeps fully masked rows finite and fits in FP16 on TensorRT.
    """
    return ((1.0 - mask) * neg)[:, None, None, :]
