"""Child process of `edge-bench --checkpoint`: median torch-eager latency of the HOI encoder (ms)."""

from __future__ import annotations

import sys
import time
from statistics import median

import torch

from h2a.export_tools.checkpoint import load_checkpoint


def main() -> None:
    path, repeats = sys.argv[1], int(sys.argv[2])
    ckpt, _ = load_checkpoint(path)
    size = ckpt.config.hoi.image_size
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        ckpt.hoi(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            ckpt.hoi(x)
            times.append(time.perf_counter() - t0)
    print(f"{median(times) * 1000:.4f}")


if __name__ == "__main__":
    main()
