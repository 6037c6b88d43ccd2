"""Checkpoints: both models' weights, their sizes, the tokenizer and where the weights came from.

One file is enough to export a bundle (`edge-export --checkpoint CKPT`) or resume training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from h2a.export_tools.models import CaptionModel, HOIEncoder, ModelConfig
from h2a.runtime.errors import InputError

#: 2: the instance decoder picks its queries from dense proposals (models/proposals.py); the
#: weights of version 1 have no place in it. 3: the HOI encoder gained the label embedding of
#: its denoising queries (training/denoising.py), which a version-2 checkpoint lacks.
CHECKPOINT_VERSION = 3


@dataclass
class Checkpoint:
    config: ModelConfig
    hoi: HOIEncoder
    caption: CaptionModel
    tokenizer_json: str
    meta: dict[str, Any] = field(default_factory=dict)  # data_sha256, steps, metrics, ...


def save_checkpoint(path: str | Path, ckpt: Checkpoint, extra: dict[str, Any] | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": CHECKPOINT_VERSION,
        "config": ckpt.config.to_dict(),
        "hoi": ckpt.hoi.state_dict(),
        "caption": ckpt.caption.state_dict(),
        "tokenizer_json": ckpt.tokenizer_json,
        "meta": ckpt.meta,
        **(extra or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _payload(path: str | Path, any_version: bool = False) -> dict[str, Any]:
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises pickle, zip and runtime errors for a damaged file
        raise InputError(f"{path}: cannot be read as a checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("version"), int):
        raise InputError(f"{path}: not a Hoi2Anomaly Edge checkpoint")
    if payload["version"] != CHECKPOINT_VERSION and not any_version:
        raise InputError(
            f"{path}: a version {payload['version']} checkpoint; this release reads version "
            f"{CHECKPOINT_VERSION} (its model changed): train again"
        )
    return payload


def read_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata (stages, seeds, seconds) without building its models; older
    checkpoint versions are read too (their metadata has the same form)."""
    meta: dict[str, Any] = _payload(path, any_version=True).get("meta", {})
    return meta


def load_checkpoint(path: str | Path) -> tuple[Checkpoint, dict[str, Any]]:
    """-> the checkpoint (models in eval mode) and the raw payload (optimizer state etc. for resuming)."""
    payload = _payload(path)
    config = ModelConfig.from_dict(payload["config"])
    hoi, caption = HOIEncoder(config.hoi), CaptionModel(config.caption)
    try:
        hoi.load_state_dict(payload["hoi"])
        caption.load_state_dict(payload["caption"])
    except RuntimeError:
        raise InputError(f"{path}: its weights do not fit the models its config describes") from None
    ckpt = Checkpoint(config, hoi.eval(), caption.eval(), payload["tokenizer_json"], payload.get("meta", {}))
    return ckpt, payload


def weights_sha256(*models: torch.nn.Module) -> str:
    """A hash of the weights themselves (names, shapes, values), independent of file framing."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
