"""HOI encoder, HOTR-style (Kim et al. 2021) as Hoi2Anomaly uses it.

backbone C5 -> 1x1 projection -> transformer encoder (image tokens) -> two parallel decoders:
- the instance decoder finds boxes and classes (humans are the class "person"); its queries are
  the image tokens that a dense proposal head found most object-like, and it refines their boxes
  layer by layer (`proposals.py`: two-stage query selection, after Deformable DETR and DINO);
- the interaction decoder finds actions and, through HOI pointers, *which* instances are the
  subject and the object: each interaction query emits two L2-normalised pointer embeddings that
  are compared, by dot product / tau, with the L2-normalised instance representations.
An image-level anomaly head reads the pooled image tokens and the strongest interaction features,
so the anomaly score is driven by interactions rather than by the mere presence of an object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from h2a.export_tools.models.attention import MASK_NEG, padding_bias
from h2a.export_tools.models.backbone import ResNet
from h2a.export_tools.models.config import HOIConfig
from h2a.export_tools.models.proposals import AnchoredDecoder, ProposalHead
from h2a.export_tools.models.transformer import MLP, EncoderLayer, QueryDecoder, sine_position_embedding


@dataclass
class HOIOutput:
    boxes: torch.Tensor  # (B, N_inst, 4) cx, cy, w, h in [0, 1] of the letterboxed input
    obj_logits: torch.Tensor  # (B, N_inst, n_objects + 1), last = "no object"
    act_logits: torch.Tensor  # (B, N_int, n_actions), multi-label
    sub_ptr: torch.Tensor  # (B, N_int, N_inst) subject-pointer logits
    obj_ptr: torch.Tensor  # (B, N_int, N_inst) object-pointer logits
    anomaly_logits: torch.Tensor  # (B, n_anomalies)
    image_tokens: torch.Tensor  # (B, T, d_model), what the caption model looks at
    # (boxes, obj_logits) of each earlier instance-decoder layer; training only, never exported
    aux: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # (boxes (B, T, 4), obj_logits (B, T, C+1)) of the dense proposals; training only
    proposals: tuple[torch.Tensor, torch.Tensor] | None = None
    # (boxes (B*G, M, 4), obj_logits (B*G, M, C+1)) of the denoising queries, every decoder layer;
    # training only (`training/denoising.py`)
    denoised: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        return (
            self.boxes,
            self.obj_logits,
            self.act_logits,
            self.sub_ptr,
            self.obj_ptr,
            self.anomaly_logits,
            self.image_tokens,
        )


def pointer_logits(pointers: torch.Tensor, instances: torch.Tensor, tau: float) -> torch.Tensor:
    """HOTR's pointer: cosine similarity / tau.  (B, Q, D) x (B, N, D) -> (B, Q, N)."""
    return F.normalize(pointers, dim=-1) @ F.normalize(instances, dim=-1).transpose(1, 2) / tau


class HOIEncoder(nn.Module):
    def __init__(self, cfg: HOIConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.backbone = ResNet(cfg.backbone_depths, cfg.backbone_width, cfg.frozen_bn, cfg.dilate_c5)
        self.input_proj = nn.Conv2d(self.backbone.out_channels, d, 1)
        side = cfg.image_size // cfg.feature_stride
        self.register_buffer("pos", sine_position_embedding(side, side, d)[None], persistent=False)
        self.encoder = nn.ModuleList(
            EncoderLayer(d, cfg.n_heads, cfg.dim_ff, cfg.dropout) for _ in range(cfg.enc_layers)
        )
        self.encoder_norm = nn.LayerNorm(d)
        if cfg.n_inst_queries > side * side:
            raise ValueError(f"n_inst_queries {cfg.n_inst_queries} > {side * side} image tokens to pick from")
        self.proposals = ProposalHead(d, cfg.n_objects + 1, side, cfg.anchor_size)
        self.inst_decoder = AnchoredDecoder(cfg.inst_dec_layers, d, cfg.n_heads, cfg.dim_ff, cfg.dropout)
        # content of the denoising queries (training only; "no object" pads): never exported
        self.label_embed = nn.Embedding(cfg.n_objects + 1, d)
        self.int_decoder = QueryDecoder(
            cfg.n_int_queries, cfg.int_dec_layers, d, cfg.n_heads, cfg.dim_ff, cfg.dropout
        )
        self.class_head = nn.Linear(d, cfg.n_objects + 1)
        self.inst_repr = MLP(d, d, d, 2)
        self.action_head = nn.Linear(d, cfg.n_actions)
        self.sub_pointer = MLP(d, d, d, 2)
        self.obj_pointer = MLP(d, d, d, 2)
        self.anomaly_head = MLP(2 * d, d, cfg.n_anomalies, 2)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S), normalised -> image tokens (B, T, D)."""
        feats = self.input_proj(self.backbone(images))  # (B, D, S/32, S/32)
        tokens = feats.flatten(2).transpose(1, 2)  # (B, T, D)
        for layer in self.encoder:
            tokens = layer(tokens, self.pos)
        return self.encoder_norm(tokens)

    def forward(
        self,
        images: torch.Tensor,
        aux: bool = False,
        denoise: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> HOIOutput:
        """`aux=True` (training) also returns the dense proposals and the boxes and classes of the
        earlier instance-decoder layers, for the losses that supervise them. `denoise` (training):
        noised boxes (B*G, M, 4), labels (B*G, M) and which are real (B*G, M), G rows per
        image, decoded on their own."""
        tokens = self.encode(images)  # (B, T, D)
        feats, prop_logits, prop_boxes = self.proposals(tokens)  # (B, T, D), (B, T, C+1), (B, T, 4)
        content, ref = ProposalHead.select(feats, prop_logits, prop_boxes, self.cfg.n_inst_queries)
        *earlier, (inst, boxes) = self.inst_decoder(content, ref, tokens, self.pos, aux)  # (B, N_inst, .)
        inter = self.int_decoder(tokens, self.pos)  # (B, N_int, D)
        instances = self.inst_repr(inst)
        tau = self.cfg.pointer_tau
        denoised = []
        if denoise is not None:
            noised_boxes, noised_labels, real = denoise
            rows = noised_boxes.shape[0] // images.shape[0]
            memory = tokens.repeat_interleave(rows, dim=0)  # (B*G, T, D)
            content = self.label_embed(noised_labels)  # (B*G, M, D)
            bias = padding_bias(real.to(content.dtype), MASK_NEG)  # (B*G, 1, 1, M)
            layers = self.inst_decoder(content, noised_boxes, memory, self.pos, True, bias)
            denoised = [(b, self.class_head(h)) for h, b in layers]
        pooled = torch.cat((tokens.mean(dim=1), inter.max(dim=1).values), dim=-1)  # (B, 2D)
        return HOIOutput(
            boxes=boxes,
            obj_logits=self.class_head(inst),
            act_logits=self.action_head(inter),
            sub_ptr=pointer_logits(self.sub_pointer(inter), instances, tau),
            obj_ptr=pointer_logits(self.obj_pointer(inter), instances, tau),
            anomaly_logits=self.anomaly_head(pooled),
            image_tokens=tokens,
            aux=[(b, self.class_head(h)) for h, b in earlier],
            proposals=(prop_boxes, prop_logits) if aux else None,
            denoised=denoised,
        )
