"""The no-cache decoder: a benchmark baseline, never part of a bundle.

What a decoder without a KV cache really does at each step: one call over the whole prefix
(causal self-attention over every position, cross-attention to the fused memory), keeping the
last position's logits. `edge-bench --no-cache-decoder` times greedy decoding with it against the
bundle's `dec_step` loop over the cache, so the cache's speed-up is measured against a decoder
someone would ship, not against the step graph replayed once per prefix token.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from h2a.export_tools.export.onnx_export import OPSET
from h2a.export_tools.models.caption_model import CaptionModel

INPUTS = ("tokens", "cross_k", "cross_v", "memory_bias")
OUTPUTS = ("logits",)


class NoCacheDecoderGraph(nn.Module):
    """tokens (1, T) with cap_encoder's cross_k / cross_v (L, 1, H, M, dh) and memory_bias (1, M)
    -> logits (1, V) of the next token."""

    def __init__(self, model: CaptionModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor, memory_bias: torch.Tensor
    ) -> torch.Tensor:
        return self.model(tokens, cross_k, cross_v, memory_bias)[:, -1]  # (1, V)


def export_no_cache_decoder(model: CaptionModel, out: Path) -> None:
    c = model.cfg
    cross = (c.dec_layers, 1, c.n_heads, c.n_memory, c.head_dim)
    example = (
        torch.randint(0, c.vocab_size, (1, 5)),
        torch.randn(cross),
        torch.randn(cross),
        torch.zeros(1, c.n_memory),
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            NoCacheDecoderGraph(model).eval(),
            example,
            buffer,  # type: ignore[arg-type]  # file-like objects are accepted
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={"tokens": {1: "length"}},
            do_constant_folding=True,
        )
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()), full_check=True)
    out.write_bytes(buffer.getvalue())
