"""Transformer pieces of the HOI encoder, after DETR's `transformer.py` (pre-norm variant).

Position embeddings are added to queries and keys at every layer, as DETR does, so that the
decoders' cross-attention knows where each image token lies.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from h2a.export_tools.models.attention import MultiHeadAttention


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int) -> None:
        super().__init__()
        dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class FeedForward(nn.Module):
    def __init__(self, d_model: int, dim_ff: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, dim_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim_ff, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def sine_position_embedding(
    height: int, width: int, d_model: int, temperature: float = 10000.0
) -> torch.Tensor:
    """DETR's normalised 2-D sine embedding for an (height, width) grid -> (height*width, d_model)."""
    half = d_model // 2
    y = (torch.arange(height, dtype=torch.float32) + 1) / height * 2 * math.pi  # (H,)
    x = (torch.arange(width, dtype=torch.float32) + 1) / width * 2 * math.pi  # (W,)
    dim_t = temperature ** (2 * (torch.arange(half) // 2) / half)  # (half,)
    pos_y = y[:, None] / dim_t  # (H, half)
    pos_x = x[:, None] / dim_t  # (W, half)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    grid = torch.cat(
        (pos_y[:, None, :].expand(height, width, half), pos_x[None, :, :].expand(height, width, half)), dim=2
    )
    return grid.reshape(height * width, 2 * half)  # (H*W, D)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dim_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, dim_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h + pos, h + pos, h))
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Query self-attention, cross-attention onto the image memory, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, dim_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, dim_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        self_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`self_bias` (B, 1, 1, Q) adds to the query self-attention scores (padding queries)."""
        h = self.norm1(tgt)
        tgt = tgt + self.dropout(self.self_attn(h + query_pos, h + query_pos, h, self_bias))
        h = self.norm2(tgt)
        tgt = tgt + self.dropout(self.cross_attn(h + query_pos, memory + memory_pos, memory))
        return tgt + self.dropout(self.ff(self.norm3(tgt)))


class QueryDecoder(nn.Module):
    """A stack of decoder layers driven by learned queries; returns the normalised last layer."""

    def __init__(
        self, n_queries: int, n_layers: int, d_model: int, n_heads: int, dim_ff: int, dropout: float
    ):
        super().__init__()
        self.query_pos = nn.Parameter(torch.randn(n_queries, d_model) * 0.02)
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, dim_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, memory: torch.Tensor, memory_pos: torch.Tensor) -> torch.Tensor:
        return self.forward_layers(memory, memory_pos, intermediate=False)[-1]  # (B, Q, D)

    def forward_layers(
        self, memory: torch.Tensor, memory_pos: torch.Tensor, intermediate: bool = True
    ) -> list[torch.Tensor]:
        """The normalised output of every layer, last one last (DETR's auxiliary decoding losses
        supervise the earlier ones); only the last with `intermediate=False`."""
        batch = memory.shape[0]
        query_pos = self.query_pos[None].expand(batch, -1, -1)  # (B, Q, D)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, memory_pos)
            outputs.append(tgt)
        kept = outputs if intermediate else outputs[-1:]
        return [self.norm(t) for t in kept]
