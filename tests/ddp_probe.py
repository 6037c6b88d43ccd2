"""Run a few HOI training steps as one process or under torchrun (gloo); print the losses as JSON.

Used by test_training.py: the losses of both launches must agree. BatchNorm is frozen here
because per-process batch statistics legitimately differ from whole-batch ones. The step is the
trainer's: proposals and query denoising included. On GPUs the
trainer converts trainable BatchNorm to SyncBatchNorm (`distributed.sync_batchnorm`), which
PyTorch cannot run on CPUs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from h2a.export_tools.data.annotations import read_iad
from h2a.export_tools.data.dataset import HOIDataset, collate
from h2a.export_tools.models import HOIEncoder, make_config
from h2a.export_tools.training import distributed as dist
from h2a.export_tools.training.hoi_loss import HOILoss
from h2a.export_tools.training.stages import hoi_step_loss
from h2a.export_tools.training.trainer import TrainConfig, Trainer


def main() -> None:
    data_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    device = dist.setup("cpu")
    data = read_iad(data_dir)
    cfg = dataclasses.replace(make_config("tiny", 10).hoi, frozen_bn=True, image_size=128)
    torch.manual_seed(0)
    model = HOIEncoder(cfg)
    dataset = HOIDataset(data.split("train"), data.objects, data.actions, data.anomalies, cfg.image_size)
    loss = HOILoss(len(data.objects))
    train = TrainConfig(epochs=1, batch_size=4, lr=1e-3, warmup_steps=1, clip=1.0, max_steps=3)

    def step(m: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return hoi_step_loss(m, batch[0], batch[1], loss, 0, trainer.step)

    trainer = Trainer("probe", model, dataset, collate, step, train, out, device)
    history = trainer.fit(progress=False)
    if dist.is_main():
        print(json.dumps([round(h["loss"], 5) for h in history]))
    dist.teardown()


if __name__ == "__main__":
    main()
