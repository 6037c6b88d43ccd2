"""Model sizes as data: one dataclass per model, a `tiny` preset for tests and a `base` preset.

`base` follows the paper's scale (ResNet50 [3,4,6,3], DETR/HOTR-sized transformer, a 4-layer
d=384 caption decoder); `tiny` keeps every code path but runs in milliseconds on a CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from h2a.export_tools.taxonomy import ACTIONS, ANOMALIES, OBJECTS


@dataclass(frozen=True)
class HOIConfig:
    image_size: int = 512
    backbone_depths: tuple[int, int, int, int] = (3, 4, 6, 3)
    backbone_width: int = 64  # planes of the first bottleneck stage; C5 has 32x this many channels
    frozen_bn: bool = True
    dilate_c5: bool = False  # DETR's DC5: image tokens at stride 16 instead of 32
    d_model: int = 256
    n_heads: int = 8
    enc_layers: int = 6
    inst_dec_layers: int = 6
    int_dec_layers: int = 6
    dim_ff: int = 1024
    n_inst_queries: int = 100
    n_int_queries: int = 16
    anchor_size: float = 0.1  # width and height of the proposal anchor of every image token
    dropout: float = 0.1
    pointer_tau: float = 0.05  # HOTR's temperature for the pointer similarities
    n_objects: int = len(OBJECTS)  # without "no object", which the model adds
    n_actions: int = len(ACTIONS)
    n_anomalies: int = len(ANOMALIES)

    @property
    def c5_channels(self) -> int:
        return self.backbone_width * 32

    @property
    def feature_stride(self) -> int:
        return 16 if self.dilate_c5 else 32

    @property
    def n_image_tokens(self) -> int:
        side = self.image_size // self.feature_stride
        return side * side


@dataclass(frozen=True)
class CaptionConfig:
    d_image: int = 256  # width of the HOI encoder's image tokens (its d_model)
    n_image_tokens: int = 256
    vocab_size: int = 1000
    d_model: int = 384
    n_heads: int = 6
    enc_layers: int = 2  # Image-HOI encoder: tag tokens cross-attend to image tokens
    dec_layers: int = 4
    dim_ff: int = 1536
    max_len: int = 80  # decoder positions, BOS included; the KV cache is preallocated to this
    max_tag_tokens: int = 24  # words of all HOI tags of one frame, padded
    dropout: float = 0.1

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_memory(self) -> int:
        """Fused tokens the decoder attends to: projected image tokens, then fused tag tokens."""
        return self.n_image_tokens + self.max_tag_tokens


@dataclass(frozen=True)
class ModelConfig:
    preset: str
    hoi: HOIConfig
    caption: CaptionConfig = field(default_factory=CaptionConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ModelConfig:
        hoi = dict(data["hoi"])
        hoi["backbone_depths"] = tuple(hoi["backbone_depths"])
        return ModelConfig(
            preset=data["preset"], hoi=HOIConfig(**hoi), caption=CaptionConfig(**data["caption"])
        )


PRESETS = ("tiny", "base")


def make_config(preset: str, vocab_size: int) -> ModelConfig:
    """Build the sizes of a preset; the caption vocabulary comes from the tokenizer in use."""
    if preset == "base":
        hoi = HOIConfig()
        cap = CaptionConfig(d_image=hoi.d_model, n_image_tokens=hoi.n_image_tokens, vocab_size=vocab_size)
    elif preset == "tiny":
        # Trained from scratch on CPU (no pretrained weights exist here), so BatchNorm trains too.
        hoi = HOIConfig(
            image_size=192,
            backbone_depths=(1, 1, 1, 1),
            backbone_width=8,
            frozen_bn=False,
            dilate_c5=True,
            d_model=64,
            n_heads=4,
            enc_layers=2,
            inst_dec_layers=2,
            int_dec_layers=2,
            dim_ff=128,
            # 24, not 12: an object two or three tokens wide fills several queries with copies of
            # itself. On the demo's 2,800 steps (generator 3, seed 0) 12 -> 24 queries took anomaly
            # AUC 0.895 -> 0.934, type mAP 0.840 -> 0.901, HOI role mAP 0.184 -> 0.332.
            n_inst_queries=24,
            n_int_queries=8,
            dropout=0.0,
        )
        cap = CaptionConfig(
            d_image=hoi.d_model,
            n_image_tokens=hoi.n_image_tokens,
            vocab_size=vocab_size,
            d_model=64,
            n_heads=2,
            enc_layers=1,
            dec_layers=2,
            dim_ff=128,
            max_len=80,
            max_tag_tokens=12,
            dropout=0.0,
        )
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return ModelConfig(preset=preset, hoi=hoi, caption=cap)
