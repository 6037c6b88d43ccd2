"""One training loop for every stage: AdamW, cosine schedule with warm-up, gradient clipping,
AMP on CUDA, DDP under torchrun, a progress bar with loss and ETA, a CSV metrics log, and a
state file written every epoch so `--resume` carries on where a run stopped.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from h2a.export_tools.training import distributed as dist

StepFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16  # global: split evenly over DDP processes
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    clip: float = 0.1
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # only where a CUDA device is used
    workers: int = 0
    max_steps: int = 0  # stop early after this many steps (0 = all epochs); for tests and smoke runs


class ShardedSampler(Sampler[int]):
    """A seeded permutation per epoch; process r takes every world-th index from r, so the union
    of all processes' k-th batches is the single-process k-th batch."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.rank, self.world = dist.rank(), dist.world_size()

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(
                self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)
            ).tolist()
        else:
            order = list(range(self.n))
        usable = len(order) - len(order) % self.world
        return iter(order[self.rank : usable : self.world])

    def __len__(self) -> int:
        return self.n // self.world


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Trainer:
    def __init__(
        self,
        stage: str,
        model: nn.Module,
        dataset: Dataset[Any],
        collate: Callable[[list[Any]], Any],
        step_fn: StepFn,
        cfg: TrainConfig,
        out_dir: Path,
        device: torch.device,
    ) -> None:
        self.stage, self.cfg, self.out_dir, self.device = stage, cfg, out_dir, device
        self.model = model.to(device)
        self.synced_bn = dist.sync_batchnorm(self.model, device)
        self.step_fn = step_fn
        world = dist.world_size()
        if cfg.batch_size % world:
            raise ValueError(f"--batch-size {cfg.batch_size} does not split over {world} processes")
        self.sampler = ShardedSampler(len(dataset), cfg.seed)  # type: ignore[arg-type]
        self.loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size // world,
            sampler=self.sampler,
            collate_fn=collate,
            num_workers=cfg.workers,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(dataset)} samples are fewer than one batch of {cfg.batch_size}")  # type: ignore[arg-type]
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(cfg.warmup_steps, self.total_steps)
        )
        self.use_amp = cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.wrapped: nn.Module = (
            DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
            if dist.is_distributed()
            else self.model
        )
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, float]] = []

    @property
    def state_path(self) -> Path:
        return self.out_dir / f"state_{self.stage}.pt"

    def save_state(self) -> None:
        if not dist.is_main():
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "config": asdict(self.cfg),
        }
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.state_path)

    def load_state(self) -> bool:
        if not self.state_path.is_file():
            return False
        state = torch.load(self.state_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        return True

    def fit(self, progress: bool = True) -> list[dict[str, float]]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.out_dir / f"metrics_{self.stage}.csv"
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"train {self.stage}",
            unit="step",
            disable=not (progress and dist.is_main()),
            dynamic_ncols=True,
        )
        writer = None
        handle = open(log_path, "a", newline="") if dist.is_main() else None  # noqa: SIM115
        try:
            while self.step < self.total_steps and self.epoch < self.cfg.epochs:
                self.sampler.epoch = self.epoch
                dataset = self.loader.dataset
                if hasattr(dataset, "epoch"):
                    dataset.epoch = self.epoch
                for batch in self.loader:
                    if self.step >= self.total_steps:
                        break
                    parts = self._train_step(batch)
                    parts = dist.mean_over_ranks(parts)
                    row = {
                        "step": float(self.step),
                        "epoch": float(self.epoch),
                        "lr": float(self.scheduler.get_last_lr()[0]),
                        **parts,
                        "time": time.time(),
                    }
                    self.history.append(row)
                    if handle is not None:
                        if writer is None:
                            writer = csv.DictWriter(handle, fieldnames=list(row))
                            if handle.tell() == 0:
                                writer.writeheader()
                        writer.writerow(row)
                    self.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{parts['loss']:.3f}", epoch=self.epoch)
                self.epoch += 1
                self.save_state()
        finally:
            bar.close()
            if handle is not None:
                handle.close()
            if self.synced_bn:
                dist.plain_batchnorm(self.model)
        return self.history

    def _train_step(self, batch: Any) -> dict[str, float]:
        self.wrapped.train()
        with torch.autocast(self.device.type, enabled=self.use_amp):
            loss, parts = self.step_fn(self.wrapped, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": float(loss.detach()), **parts}
