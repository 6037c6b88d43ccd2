"""DDP plumbing: `torchrun` sets RANK/WORLD_SIZE/LOCAL_RANK; a plain run is a world of one.

gloo serves CPUs (and the tests), NCCL serves CUDA desktops.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: str) -> torch.device:
    """Join the process group when launched by torchrun; pick this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(device)


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        value = value.clone()
        dist.all_reduce(value)
    return value


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    if not is_distributed():
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> int:
    """Under DDP on GPUs, make trainable BatchNorm layers share batch statistics across processes,
    so that N processes with batch B/N train like one process with batch B. Converted in place;
    returns how many layers were converted. PyTorch's SyncBatchNorm runs on GPUs only, so CPU
    (gloo) runs keep per-process statistics. Frozen BatchNorm is not a BatchNorm and is left."""
    if not is_distributed() or device.type != "cuda":
        return 0
    count = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for name, child in model.named_children():
        model.add_module(name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return count


def plain_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Undo `sync_batchnorm` (in place below `module`): checkpoints and ONNX export see the
    ordinary BatchNorm2d with the trained parameters and running statistics."""
    if isinstance(module, torch.nn.SyncBatchNorm):
        plain = torch.nn.BatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        state = module.state_dict()
        plain.load_state_dict(state)
        plain.train(module.training)
        if state:
            plain.to(next(iter(state.values())).device)
        return plain
    for name, child in module.named_children():
        module.add_module(name, plain_batchnorm(child))
    return module
