"""Caption model: projector, Image-HOI encoder, and a small decoder with a KV-cache step.

- projector: two linear layers with a ReLU, mapping the HOI encoder's image tokens to the caption
  width (the paper's bridge between the two models);
- Image-HOI encoder: HOI *tag tokens* (the words of each detected triplet, "person aim gun", plus
  a learned embedding of the triplet's two boxes) self-attend and cross-attend to the image tokens;
  the fused memory is [projected image tokens ; fused tag tokens];
- decoder: causal self-attention, cross-attention to the fused memory, LM head tied to the word
  embedding. `step` is the exported `dec_step` graph: one token in, its K/V out; the cache is
  preallocated and written by the caller (README, "Graph contract"; runtime/decoding.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from h2a.export_tools.models.attention import MASK_NEG, MultiHeadAttention, padding_bias
from h2a.export_tools.models.config import CaptionConfig
from h2a.export_tools.models.transformer import FeedForward, sine_position_embedding

#: Numbers per tag token's box feature: subject box then object box, each cx, cy, w, h.
TAG_BOX_DIMS = 8


class Projector(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_out)
        self.fc2 = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class AttentionBlock(nn.Module):
    """Pre-norm self-attention, cross-attention and feed-forward sub-layers; subclasses wire them."""

    def __init__(self, cfg: CaptionConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = MultiHeadAttention(d, cfg.n_heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.cross_attn = MultiHeadAttention(d, cfg.n_heads, cfg.dropout)
        self.norm3 = nn.LayerNorm(d)
        self.ff = FeedForward(d, cfg.dim_ff, cfg.dropout)


class ImageHOILayer(AttentionBlock):
    """Tag tokens: self-attention among themselves, cross-attention onto the image tokens, FFN."""

    def forward(self, tags: torch.Tensor, tag_bias: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h = self.norm1(tags)
        tags = tags + self.self_attn(h, h, h, tag_bias)
        tags = tags + self.cross_attn(self.norm2(tags), image, image)
        return tags + self.ff(self.norm3(tags))


class DecoderBlock(AttentionBlock):
    """Causal self-attention (cached when stepping), cross-attention to the fused memory with
    precomputed K/V, feed-forward."""

    def forward(
        self,
        x: torch.Tensor,
        causal_bias: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        memory_bias: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher-forced / no-cache path over a whole sequence x (B, T, D)."""
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, causal_bias)
        x = x + self.cross_attn.attend(self.norm2(x), cross_k, cross_v, memory_bias)
        return x + self.ff(self.norm3(x))

    def step(
        self,
        x: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        cache_bias: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        memory_bias: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One new token x (B, 1, D) against its cache (B, H, Tmax, dh); returns x and its own K/V."""
        attn = self.self_attn
        h = self.norm1(x)
        q = attn.split_one(attn.q_proj(h))  # (B, H, 1, dh)
        k_new, v_new = attn.split_one(attn.k_proj(h)), attn.split_one(attn.v_proj(h))  # (B, H, 1, dh)
        scale = attn.head_dim**-0.5
        past = q @ cache_k.transpose(-2, -1) * scale + cache_bias  # (B, H, 1, Tmax)
        own = (q * k_new).sum(dim=-1, keepdim=True) * scale  # (B, H, 1, 1)
        weights = torch.cat((past, own), dim=-1).softmax(dim=-1)  # (B, H, 1, Tmax + 1)
        mixed = weights[..., :-1] @ cache_v + weights[..., -1:] * v_new  # (B, H, 1, dh)
        x = x + attn.out_proj(attn.merge_one(mixed))
        x = x + self.cross_attn.attend_one(self.norm2(x), cross_k, cross_v, memory_bias)
        return x + self.ff(self.norm3(x)), k_new, v_new


LayerTensors = torch.Tensor | Sequence[torch.Tensor]  # (L, ...) or L x (...)


class CaptionModel(nn.Module):
    image_pos: torch.Tensor
    cache_index: torch.Tensor
    causal: torch.Tensor

    def __init__(self, cfg: CaptionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.projector = Projector(cfg.d_image, d)
        side = math.isqrt(cfg.n_image_tokens)
        self.register_buffer("image_pos", sine_position_embedding(side, side, d)[None], persistent=False)
        self.word_emb = nn.Embedding(cfg.vocab_size, d)
        self.box_emb = nn.Sequential(nn.Linear(TAG_BOX_DIMS, d), nn.ReLU(), nn.Linear(d, d))
        self.fusion = nn.ModuleList(ImageHOILayer(cfg) for _ in range(cfg.enc_layers))
        self.memory_norm = nn.LayerNorm(d)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.dec_layers))
        self._block_list: list[DecoderBlock] = list(self.blocks)  # type: ignore[arg-type]
        self.final_norm = nn.LayerNorm(d)
        self.register_buffer("cache_index", torch.arange(cfg.max_len), persistent=False)
        self.register_buffer(
            "causal", torch.full((cfg.max_len, cfg.max_len), MASK_NEG).triu(1), persistent=False
        )

    # ---- Image-HOI encoder (graph `cap_encoder`) -------------------------------------------------
    def encode(
        self,
        image_tokens: torch.Tensor,
        tag_ids: torch.Tensor,
        tag_mask: torch.Tensor,
        tag_boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_tokens (B, T, d_image), tag_ids (B, S), tag_mask (B, S) 1/0, tag_boxes (B, S, 8)
        -> fused memory (B, T + S, D) and its additive attention bias (B, T + S)."""
        image = self.projector(image_tokens) + self.image_pos  # (B, T, D)
        tags = self.word_emb(tag_ids) + self.box_emb(tag_boxes)  # (B, S, D)
        tag_bias = padding_bias(tag_mask, MASK_NEG)  # (B, 1, 1, S)
        for layer in self.fusion:
            tags = layer(tags, tag_bias, image)
        memory = self.memory_norm(torch.cat((image, tags), dim=1))  # (B, M, D)
        keep = torch.cat((torch.ones_like(image[..., 0]), tag_mask), dim=1)  # (B, M)
        return memory, (1.0 - keep) * MASK_NEG

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every decoder layer's cross-attention K/V, once per caption -> (L, B, H, M, dh) each."""
        pairs = [block.cross_attn.project_kv(memory, memory) for block in self._block_list]
        return torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs])

    # ---- decoder --------------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(x) @ self.word_emb.weight.t()  # tied LM head: (..., V)

    def forward(
        self, tokens: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor, memory_bias: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for tokens (B, T); also the no-cache reference path."""
        length = tokens.shape[1]
        x = self.word_emb(tokens) + self.pos_emb(self.cache_index[:length])[None]  # (B, T, D)
        causal = self.causal[:length, :length][None, None]  # (1, 1, T, T)
        bias = memory_bias[:, None, None, :]  # (B, 1, 1, M)
        for index, block in enumerate(self._block_list):
            x = block(x, causal, cross_k[index], cross_v[index], bias)
        return self.logits(x)

    def step(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        self_k: LayerTensors,
        self_v: LayerTensors,
        cross_k: LayerTensors,
        cross_v: LayerTensors,
        memory_bias: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Graph `dec_step`. token (B, 1), position (1,) = tokens already cached (also the valid
        length), self_k/self_v (L, B, H, Tmax, dh) -> logits (B, V), new_k/new_v (L, B, H, 1, dh).
        Caches and cross K/V may be one stacked tensor or a list of L per-layer tensors (the
        exported graph takes them per layer, so that no layer's slice is copied)."""
        x = self.word_emb(token) + self.pos_emb(position)[None]  # (B, 1, D)
        cache_bias = ((self.cache_index >= position).float() * MASK_NEG)[None, None, None, :]  # (1,1,1,Tmax)
        bias = memory_bias[:, None, None, :]  # (B, 1, 1, M)
        new_k, new_v = [], []
        for index, block in enumerate(self._block_list):
            x, k, v = block.step(
                x, self_k[index], self_v[index], cache_bias, cross_k[index], cross_v[index], bias
            )
            new_k.append(k)
            new_v.append(v)
        return self.logits(x)[:, 0], torch.stack(new_k), torch.stack(new_v)

    def empty_cache(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        shape = (cfg.dec_layers, batch, cfg.n_heads, cfg.max_len, cfg.head_dim)
        return torch.zeros(shape), torch.zeros(shape)
