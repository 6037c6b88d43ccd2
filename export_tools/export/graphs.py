"""Torch modules whose forward is exactly one exported graph, plus example inputs for tracing.

Each wrapper returns a tuple in the order `h2a.runtime.graphs` lists the outputs, so the graph
contract is written once and the exporter only reads it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from h2a.export_tools.models.backbone import fold_batch_norms
from h2a.export_tools.models.caption_model import TAG_BOX_DIMS, CaptionModel
from h2a.export_tools.models.hoi_encoder import HOIEncoder
from h2a.runtime.graphs import CAP_ENCODER, DEC_STEP, HOI, GraphSpec


class HOIGraph(nn.Module):
    def __init__(self, model: HOIEncoder) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)  # the caller's model keeps its batch norms
        self.model.backbone = fold_batch_norms(model.backbone)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(images).as_tuple()


class CapEncoderGraph(nn.Module):
    def __init__(self, model: CaptionModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_tokens: torch.Tensor,
        tag_ids: torch.Tensor,
        tag_mask: torch.Tensor,
        tag_boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        memory, memory_bias = self.model.encode(image_tokens, tag_ids, tag_mask, tag_boxes)
        cross_k, cross_v = self.model.cross_kv(memory)
        return memory, cross_k, cross_v, memory_bias


class DecStepGraph(nn.Module):
    """Inputs: token, position, then per layer self_k_*, self_v_*, cross_k_*, cross_v_*, then
    memory_bias (the order of `dec_step_spec`)."""

    def __init__(self, model: CaptionModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, token: torch.Tensor, position: torch.Tensor, *rest: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        n = self.model.cfg.dec_layers
        self_k, self_v, cross_k, cross_v = (list(rest[i * n : (i + 1) * n]) for i in range(4))
        return self.model.step(token, position, self_k, self_v, cross_k, cross_v, rest[4 * n])


def random_inputs(
    spec: GraphSpec, hoi: HOIEncoder, cap: CaptionModel, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Fresh random inputs of the right shapes and ranges for one graph (tracing and parity)."""
    h, c = hoi.cfg, cap.cfg
    g = generator
    if spec is HOI:
        return (torch.randn(batch, 3, h.image_size, h.image_size, generator=g),)
    if spec is CAP_ENCODER:
        tags = c.max_tag_tokens
        valid = int(torch.randint(1, tags + 1, (1,), generator=g))
        mask = torch.zeros(batch, tags)
        mask[:, :valid] = 1.0
        return (
            torch.randn(batch, c.n_image_tokens, c.d_image, generator=g),
            torch.randint(0, c.vocab_size, (batch, tags), generator=g),
            mask,
            torch.rand(batch, tags, TAG_BOX_DIMS, generator=g),
        )
    if spec.name == DEC_STEP.name:
        cache = (batch, c.n_heads, c.max_len, c.head_dim)
        cross = (batch, c.n_heads, c.n_memory, c.head_dim)
        bias = torch.zeros(batch, c.n_memory)
        bias[:, c.n_image_tokens + 1 :] = -1.0e4
        layers = c.dec_layers
        return (
            torch.randint(0, c.vocab_size, (batch, 1), generator=g),
            torch.randint(0, c.max_len, (1,), generator=g),
            *(torch.randn(cache, generator=g) for _ in range(2 * layers)),
            *(torch.randn(cross, generator=g) for _ in range(2 * layers)),
            bias,
        )
    raise ValueError(f"unknown graph {spec.name}")


def graph_module(spec: GraphSpec, hoi: HOIEncoder, cap: CaptionModel) -> nn.Module:
    module: nn.Module = {
        "hoi": HOIGraph(hoi),
        "cap_encoder": CapEncoderGraph(cap),
        "dec_step": DecStepGraph(cap),
    }[spec.name]
    return module.eval()


def dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    """Batch is dynamic on every tensor that has it; all other sizes stay static (TensorRT likes them)."""
    axes: dict[str, dict[int, str]] = {}
    for tensor in (*spec.inputs, *spec.outputs):
        if "B" in tensor.shape:
            axes[tensor.name] = {tensor.shape.index("B"): "batch"}
    return axes
