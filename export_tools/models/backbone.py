"""ResNet-50 (bottleneck, [3,4,6,3]) returning C5, written here because torchvision is unavailable.

Module names follow torchvision's (`conv1`, `bn1`, `layer1.0.downsample.0`, ...) so that a
torchvision-format state dict loads with `load_state_dict(..., strict=False)` minus the `fc` head.
Depth and width are configurable so tests can run the same code at a fraction of the cost.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (DETR's choice for small batches)."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)  # present in torchvision checkpoints
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # (C,)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def _norm(channels: int, frozen: bool) -> nn.Module:
    return FrozenBatchNorm2d(channels) if frozen else nn.BatchNorm2d(channels)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, frozen_bn: bool, dilation: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = _norm(planes, frozen_bn)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = _norm(planes, frozen_bn)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = _norm(out_ch, frozen_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(out_ch, frozen_bn)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem + four bottleneck stages; `forward` returns C5 at stride 32, or at stride 16 with
    `dilate_c5` (DETR's DC5 variant: the last stage dilates instead of striding, which doubles the
    resolution of the image tokens and helps small boxes)."""

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        frozen_bn: bool = True,
        dilate_c5: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(width, frozen_bn)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = width
        for index, depth in enumerate(depths):
            planes = width * 2**index
            last = index == len(depths) - 1
            stride = 1 if index == 0 or (last and dilate_c5) else 2
            dilation = 2 if last and dilate_c5 else 1
            blocks = []
            for block in range(depth):
                blocks.append(Bottleneck(in_ch, planes, stride if block == 0 else 1, frozen_bn, dilation))
                in_ch = planes * Bottleneck.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.out_channels = in_ch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, w, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # (B, 32w, H/32, W/32), or H/16 with dilate_c5


def resnet50(frozen_bn: bool = True) -> ResNet:
    return ResNet((3, 4, 6, 3), 64, frozen_bn)


def _fold_into(conv: nn.Module, norm: nn.Module) -> nn.Conv2d:
    """A conv whose weights and bias include the (frozen or eval-mode) batch norm after it."""
    if not isinstance(conv, nn.Conv2d) or not isinstance(norm, FrozenBatchNorm2d | nn.BatchNorm2d):
        raise TypeError(f"cannot fold {type(norm).__name__} into {type(conv).__name__}")
    stats = (norm.weight, norm.bias, norm.running_mean, norm.running_var)
    if any(t is None for t in stats):
        raise TypeError("batch norm without affine parameters or running statistics cannot be folded")
    weight, bias, mean, var = (torch.as_tensor(t).detach() for t in stats)
    scale = weight * (var + norm.eps).rsqrt()  # (C,)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
    )
    conv_bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bias + (conv_bias - mean) * scale)  # type: ignore[union-attr]
    return fused


def fold_batch_norms(backbone: ResNet) -> ResNet:
    """A copy of `backbone` for export with every batch norm folded into the conv before it.

    Frozen BN exports as a Mul and an Add after each Conv. ONNX Runtime folds those in FP32, but
    after INT8 Q/DQ the Conv output is quantized before the Mul, nothing fuses, and the INT8 graph
    gets 30% slower; TensorRT has the same problem. Folding once at export fixes both.
    """
    fused = copy.deepcopy(backbone).eval()
    fused.conv1 = _fold_into(fused.conv1, fused.bn1)
    fused.bn1 = nn.Identity()
    for module in fused.modules():
        if isinstance(module, Bottleneck):
            for i in (1, 2, 3):
                setattr(
                    module, f"conv{i}", _fold_into(getattr(module, f"conv{i}"), getattr(module, f"bn{i}"))
                )
                setattr(module, f"bn{i}", nn.Identity())
            if isinstance(module.downsample, nn.Sequential):
                module.downsample = nn.Sequential(_fold_into(module.downsample[0], module.downsample[1]))
    return fused
