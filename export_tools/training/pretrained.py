"""Loading a torchvision-format ResNet-50 state dict onto our backbone.

Users will have torchvision's ImageNet files, named as torchvision caches them:
`resnet50-0676ba61.pth` (IMAGENET1K_V1) or `resnet50-11ad3fa6.pth` (IMAGENET1K_V2), usually in
`~/.cache/torch/hub/checkpoints/`. Our module names equal torchvision's, so the mapping is the
identity minus the classifier (`fc.*`); BatchNorm's `num_batches_tracked` is dropped by
`FrozenBatchNorm2d`. Nothing is downloaded: the file must be on disk.
"""

from __future__ import annotations

from pathlib import Path

import torch

from h2a.export_tools.models.backbone import ResNet
from h2a.runtime.errors import InputError

CLASSIFIER_PREFIX = "fc."


def load_torchvision_resnet(backbone: ResNet, path: str | Path) -> int:
    """Load weights into `backbone`; returns how many tensors were loaded. Refuses partial fits."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: no such file (a torchvision ResNet-50 state dict, e.g. resnet50-0676ba61.pth)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"{path}: cannot be read as a state dict ({type(err).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}
    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise InputError(
            f"{path}: does not fit this backbone ({len(missing)} missing, {len(result.unexpected_keys)} "
            f"unexpected keys, e.g. {(missing + result.unexpected_keys)[:2]}); is it a ResNet-50?"
        )
    return len(state)
