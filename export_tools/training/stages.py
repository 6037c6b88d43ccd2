"""The three training stages behind `edge-train`: hoi, caption, distill.

All of them read and write one training folder: `model.pt` (what `edge-export --model-dir`
exports), `state_<stage>.pt` (resume), `metrics_<stage>.csv`; distill also keeps `teacher.pt`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from h2a.export_tools.captions import corpus
from h2a.export_tools.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from h2a.export_tools.data.annotations import DataSet, read_iad
from h2a.export_tools.data.dataset import Augment, HOIDataset, Target, collate
from h2a.export_tools.models import CaptionModel, HOIEncoder, make_config
from h2a.export_tools.models.config import CaptionConfig
from h2a.export_tools.tokenizer_build import SPECIAL_TOKENS, train_tokenizer
from h2a.export_tools.training import distributed as dist
from h2a.export_tools.training.caption_data import CaptionDataset, caption_collate, compute_features
from h2a.export_tools.training.caption_loss import CaptionLM, distill_loss, lm_loss
from h2a.export_tools.training.denoising import DenoiseSettings, make_denoise_queries
from h2a.export_tools.training.hoi_loss import HOILoss
from h2a.export_tools.training.pretrained import load_torchvision_resnet
from h2a.export_tools.training.trainer import TrainConfig, Trainer
from h2a.runtime.errors import InputError
from h2a.runtime.tokenizer import CaptionTokenizer

MODEL_FILE, TEACHER_FILE = "model.pt", "teacher.pt"


def data_sha256(data: DataSet) -> str:
    return hashlib.sha256((data.root / "annotations.json").read_bytes()).hexdigest()


def labels_of(data: DataSet) -> dict[str, list[str]]:
    return {"objects": data.objects, "actions": data.actions, "anomalies": data.anomalies}


def hoi_dataset(data: DataSet, split: str, image_size: int, augment: bool, seed: int = 0) -> HOIDataset:
    records = data.split(split)
    if not records:
        raise InputError(f"{data.root}: the {split!r} split is empty")
    return HOIDataset(
        records, data.objects, data.actions, data.anomalies, image_size, Augment() if augment else None, seed
    )


def _save(out: Path, ckpt: Checkpoint) -> None:
    if dist.is_main():
        save_checkpoint(out / MODEL_FILE, ckpt)


def _stage_meta(trainer: Trainer, started: float) -> dict[str, Any]:
    """`torch_threads` is recorded because a CPU run's result depends on it: the same seed and data
    trained with 1 and with 2 threads differ after 150 steps (loss 11.04 against 10.47), as the
    threads split sums in a different order and training amplifies the difference."""
    last = trainer.history[-1] if trainer.history else {}
    return {
        "steps": trainer.step,
        "epochs": trainer.epoch,
        "seconds": round(time.time() - started, 1),
        "final_loss": last.get("loss"),
        "world_size": dist.world_size(),
        "seed": trainer.cfg.seed,
        "torch_threads": torch.get_num_threads(),
    }


DENOISE = DenoiseSettings()


def hoi_step_loss(
    model: nn.Module,
    images: torch.Tensor,
    targets: list[Target],
    loss: HOILoss,
    seed: int,
    step: int,
    denoise: DenoiseSettings = DENOISE,
    aux_loss: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One HOI training step's loss: the proposals are always supervised, the denoising queries
    always added. Their noise follows `step`, so a resumed run draws what it would have drawn."""
    device = images.device
    dn = make_denoise_queries(targets, loss.n_objects, denoise, seed, step)
    queries = (dn.boxes.to(device), dn.labels.to(device), dn.valid.to(device))
    out = model(images, aux=True, denoise=queries)
    if not aux_loss:
        out.aux = []
    return loss(out, targets, dn)


def train_hoi(
    data_dir: Path,
    preset: str,
    out: Path,
    cfg: TrainConfig,
    resume: bool = False,
    backbone_weights: Path | None = None,
    progress: bool = True,
    aux_loss: bool = False,
    denoise: DenoiseSettings = DENOISE,
) -> Checkpoint:
    """`aux_loss`: DETR's auxiliary losses on every instance-decoder layer. Measured on the tiny
    demo run (2,800 CPU steps): HOI role mAP 0.045 -> 0.089, but anomaly AUC 0.955 -> 0.920, so it
    is off by default there; long GPU runs are where DETR recommends it.

    `denoise`: query denoising (DN-DETR), always on. On the demo's 2,800 steps (generator 5, one
    thread) it took seed 0 from anomaly AUC 0.954, type mAP 0.934, role mAP 0.309 to 0.964,
    0.947, 0.351 (stage 727 s before, 703 s after, two such runs side by side); with two threads
    the demo's HOI stage took 563 s against 465 s before."""
    device = dist.setup(cfg.device)
    data = read_iad(data_dir)
    train_records = data.split("train")
    texts = [HOIDataset._caption_text(r) for r in train_records if r.caption] + corpus()
    tokenizer = train_tokenizer(texts)
    config = make_config(preset, tokenizer.get_vocab_size())
    config = dataclasses.replace(
        config,
        hoi=dataclasses.replace(
            config.hoi,
            n_objects=len(data.objects),
            n_actions=len(data.actions),
            n_anomalies=len(data.anomalies),
        ),
    )
    torch.manual_seed(cfg.seed)
    hoi, caption = HOIEncoder(config.hoi), CaptionModel(config.caption)
    if backbone_weights is not None:
        load_torchvision_resnet(hoi.backbone, backbone_weights)
    loss = HOILoss(len(data.objects))
    # Channels-last convolutions: the tiny backbone's forward and backward take 21% less time on a
    # CPU core (0.210 -> 0.165 s per batch of 16), and cuDNN prefers this layout under AMP too.
    hoi.backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack it

    def step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        images = images.to(device, memory_format=torch.channels_last)  # (B, 3, S, S)
        return hoi_step_loss(model, images, targets, loss, cfg.seed, trainer.step, denoise, aux_loss)

    trainer = Trainer(
        "hoi",
        hoi,
        hoi_dataset(data, "train", config.hoi.image_size, True, cfg.seed),
        collate,
        step,
        cfg,
        out,
        device,
    )
    if resume and not trainer.load_state():
        raise InputError(f"{trainer.state_path}: nothing to resume from")
    started = time.time()
    trainer.fit(progress)
    meta = {
        "data_sha256": data_sha256(data),
        "labels": labels_of(data),
        "weights": "trained",
        "stages": {"hoi": _stage_meta(trainer, started)},
    }
    ckpt = Checkpoint(config, hoi.eval(), caption.eval(), tokenizer.to_str(), meta)
    _save(out, ckpt)
    return ckpt


def _load_trained(out: Path) -> Checkpoint:
    path = out / MODEL_FILE
    if not path.is_file():
        raise InputError(f"{path}: not found; run `edge-train hoi --out {out}` first")
    ckpt, _ = load_checkpoint(path)
    if "hoi" not in ckpt.meta.get("stages", {}):
        raise InputError(f"{path}: its HOI encoder was never trained; run `edge-train hoi` first")
    return ckpt


def _features(
    ckpt: Checkpoint, data: DataSet, split: str, cap_cfg: CaptionConfig, device: torch.device, progress: bool
) -> Any:
    tok = CaptionTokenizer(ckpt.tokenizer_json)
    pad, _, bos, eos = (tok.token_id(t) for t in SPECIAL_TOKENS)
    ds = hoi_dataset(data, split, ckpt.config.hoi.image_size, augment=False)
    return compute_features(
        ckpt.hoi,
        ds,
        tok,
        data.objects,
        data.actions,
        cap_cfg.max_tag_tokens,
        cap_cfg.max_len,
        (pad, bos, eos),
        device,
        progress,
    ), pad


def _fit_caption(
    stage: str,
    model: CaptionModel,
    feats: Any,
    pad: int,
    cfg: TrainConfig,
    mix: float,
    out: Path,
    device: torch.device,
    resume: bool,
    progress: bool,
    teacher: CaptionLM | None = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> Trainer:
    wrapper = CaptionLM(model)

    def step(module: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        image_tokens, ids, mask, boxes, tokens = (t.to(device) for t in batch)
        logits = module(image_tokens, ids, mask, boxes, tokens[:, :-1])
        if teacher is None:
            return lm_loss(logits, tokens[:, 1:], pad), {}
        with torch.no_grad():
            soft = teacher(image_tokens, ids, mask, boxes, tokens[:, :-1])
        total, kl, lm = distill_loss(logits, soft, tokens[:, 1:], pad, alpha, temperature)
        return total, {"kl": float(kl.detach()), "lm": float(lm.detach())}

    trainer = Trainer(
        stage, wrapper, CaptionDataset(feats, mix, cfg.seed), caption_collate, step, cfg, out, device
    )
    if resume and not trainer.load_state():
        raise InputError(f"{trainer.state_path}: nothing to resume from")
    trainer.fit(progress)
    return trainer


def train_caption(
    data_dir: Path, out: Path, cfg: TrainConfig, mix: float = 0.5, resume: bool = False, progress: bool = True
) -> Checkpoint:
    device = dist.setup(cfg.device)
    data, ckpt = read_iad(data_dir), _load_trained(out)
    feats, pad = _features(ckpt, data, "train", ckpt.config.caption, device, progress)
    torch.manual_seed(cfg.seed)
    model = CaptionModel(ckpt.config.caption)
    started = time.time()
    trainer = _fit_caption("caption", model, feats, pad, cfg, mix, out, device, resume, progress)
    ckpt.caption = model.eval()
    ckpt.meta.setdefault("stages", {})["caption"] = {**_stage_meta(trainer, started), "mix": mix}
    _save(out, ckpt)
    return ckpt


def teacher_config(student: CaptionConfig) -> CaptionConfig:
    """The teacher: twice the width (heads alike) and twice the decoder depth of the edge decoder."""
    return dataclasses.replace(
        student,
        d_model=student.d_model * 2,
        n_heads=student.n_heads * 2,
        dec_layers=student.dec_layers * 2,
        enc_layers=student.enc_layers + 1,
        dim_ff=student.dim_ff * 2,
    )


def train_distill(
    data_dir: Path,
    out: Path,
    cfg: TrainConfig,
    teacher_cfg: TrainConfig,
    mix: float = 0.5,
    alpha: float = 0.5,
    temperature: float = 2.0,
    progress: bool = True,
) -> Checkpoint:
    """Train a larger teacher with the LM loss, then the edge-size student from it (KL + LM)."""
    device = dist.setup(cfg.device)
    data, ckpt = read_iad(data_dir), _load_trained(out)
    feats, pad = _features(ckpt, data, "train", ckpt.config.caption, device, progress)
    t_cfg = teacher_config(ckpt.config.caption)
    torch.manual_seed(cfg.seed)
    teacher = CaptionModel(t_cfg)
    started = time.time()
    t_trainer = _fit_caption("teacher", teacher, feats, pad, teacher_cfg, mix, out, device, False, progress)
    teacher_meta = {
        **_stage_meta(t_trainer, started),
        "params": sum(p.numel() for p in teacher.parameters()),
        "config": dataclasses.asdict(t_cfg),
    }
    if dist.is_main():
        torch.save({"config": dataclasses.asdict(t_cfg), "caption": teacher.state_dict()}, out / TEACHER_FILE)
    frozen_teacher = CaptionLM(teacher.eval()).to(device)
    for p in frozen_teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    student = CaptionModel(ckpt.config.caption)
    started = time.time()
    s_trainer = _fit_caption(
        "distill",
        student,
        feats,
        pad,
        cfg,
        mix,
        out,
        device,
        False,
        progress,
        frozen_teacher,
        alpha,
        temperature,
    )
    ckpt.caption = student.eval()
    ckpt.meta.setdefault("stages", {})["distill"] = {
        **_stage_meta(s_trainer, started),
        "alpha": alpha,
        "temperature": temperature,
        "teacher": teacher_meta,
        "student_params": sum(p.numel() for p in student.parameters()),
    }
    _save(out, ckpt)
    return ckpt
