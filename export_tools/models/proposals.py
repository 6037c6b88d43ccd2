"""Two-stage instance decoding: dense proposals pick the instance queries, boxes are refined.

Plain DETR starts every instance query from a learned position and learns *where* to look and
*what* box to draw at the same time, which takes hundreds of epochs; on the demo's CPU budget its
small objects were never found at all. Deformable DETR's two-stage variant and DINO's query
selection converge much faster, and this module follows them:

- every image token predicts a class and a box relative to its own grid cell (an anchor), which a
  dense head learns quickly because each token only has to describe what lies around it;
- the k most confident tokens become the instance queries: their features are the content, their
  boxes the reference points (detached, as in Deformable DETR);
- each decoder layer predicts a correction of its reference box in inverse-sigmoid space and
  hands the corrected box on (iterative refinement); a query's position embedding is the sine
  embedding of its current box (DAB-DETR), so cross-attention looks where the box is.

Everything is static-shaped (TopK with a constant k, gathers), so it exports to ONNX opset 17 and
TensorRT like the rest of the graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from h2a.export_tools.models.transformer import MLP, DecoderLayer

BoxesAndHidden = list[tuple[torch.Tensor, torch.Tensor]]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def grid_anchors(side: int, anchor_size: float) -> torch.Tensor:
    """One box per token of a (side, side) grid, row-major like the flattened feature map:
    centred on its cell, `anchor_size` wide and high -> (side*side, 4) cx, cy, w, h."""
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side  # (side,)
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    size = torch.full_like(cx, anchor_size)
    return torch.stack((cx, cy, size, size), dim=-1).reshape(side * side, 4)


def box_sine_embedding(boxes: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of cx, cy, w, h, d_model / 4 channels each: (B, Q, 4) -> (B, Q, d_model)."""
    per_coord = d_model // 4
    dim_t = temperature ** (2 * (torch.arange(per_coord, device=boxes.device) // 2) / per_coord)
    angles = boxes[..., None] * 2 * math.pi / dim_t  # (B, Q, 4, per_coord)
    emb = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
    return emb.flatten(-2)  # (B, Q, 4 * per_coord)


class ProposalHead(nn.Module):
    """A class and a box for every image token; `select` keeps the k most confident."""

    def __init__(self, d_model: int, n_classes: int, side: int, anchor_size: float) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.class_head = nn.Linear(d_model, n_classes)
        self.box_head = MLP(d_model, d_model, 4, 3)
        self.register_buffer("anchors", inverse_sigmoid(grid_anchors(side, anchor_size)), persistent=False)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, T, D) -> features (B, T, D), class logits (B, T, C+1), boxes (B, T, 4)."""
        feats = self.norm(self.proj(tokens))
        boxes = (self.box_head(feats) + self.anchors).sigmoid()  # (B, T, 4)
        return feats, self.class_head(feats), boxes

    @staticmethod
    def select(
        feats: torch.Tensor, logits: torch.Tensor, boxes: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k tokens most likely to be an object (any class but "no object") ->
        their features (B, k, D) and their boxes (B, k, 4), detached as reference points."""
        objectness = logits[..., :-1].max(-1).values  # (B, T)
        # in image order, not score order: two near-equal scores that swap (INT8 noise, a
        # slightly different frame) then leave every query where it was; the decoder does not
        # care about order, but per-query comparisons (the INT8 gate, tracking) do
        index = objectness.topk(k, dim=1).indices.sort(dim=1).values  # (B, k)
        picked = feats.gather(1, index[..., None].expand(-1, -1, feats.shape[-1]))  # (B, k, D)
        ref = boxes.gather(1, index[..., None].expand(-1, -1, 4)).detach()  # (B, k, 4)
        return picked, ref


class AnchoredDecoder(nn.Module):
    """Decoder layers whose queries carry a box: each layer corrects it. The box head and the
    position MLP are shared by all layers (one module, listed once per layer), so the last
    layer's loss trains the boxes every layer hands on; without auxiliary losses that took HOI
    role mAP from 0.045 to 0.345 on the demo data of generator 2 (flat backdrops; generator 3's
    photographs and camera effects brought it down to about 0.2). The exporter reads shared
    weights through Identity nodes, which `onnx_export` folds back into initializers."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, dim_ff: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, dim_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.query_pos = nn.ModuleList([MLP(d_model, d_model, d_model, 2)] * n_layers)  # shared
        self.box_head = nn.ModuleList([MLP(d_model, d_model, 4, 3)] * n_layers)  # shared
        self.d_model = d_model

    def forward(
        self,
        tgt: torch.Tensor,
        ref: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        intermediate: bool = False,
        self_bias: torch.Tensor | None = None,
    ) -> BoxesAndHidden:
        """tgt (B, Q, D) content, ref (B, Q, 4) boxes -> (normalised hidden (B, Q, D),
        boxes (B, Q, 4)) of every layer when `intermediate`, else of the last one only.
        `self_bias` (B, 1, 1, Q) keeps padding queries out of the self-attention (denoising)."""
        outputs: BoxesAndHidden = []
        for layer, pos_mlp, box_head in zip(self.layers, self.query_pos, self.box_head, strict=True):
            query_pos = pos_mlp(box_sine_embedding(ref, self.d_model))  # (B, Q, D)
            tgt = layer(tgt, query_pos, memory, memory_pos, self_bias)
            hidden = self.norm(tgt)
            boxes = (box_head(hidden) + inverse_sigmoid(ref)).sigmoid()  # (B, Q, 4)
            outputs.append((hidden, boxes))
            ref = boxes.detach()
        return outputs if intermediate else outputs[-1:]
