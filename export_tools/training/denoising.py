"""Query denoising for the instance decoder (DN-DETR, Li et al. 2022); training only.

Hungarian matching hands a query a different target from one step to the next while the boxes are
still poor, so early on the box head gets an unstable signal and small or thin boxes (a phone, a
lying person) converge last. Denoising adds queries that start from ground-truth boxes and
labels with noise added and must give back the clean box and class: a stable, matching-free
box-regression signal through the same decoder layers and heads the real queries use.

The noised queries run as a separate decoder pass over the same image tokens (each noise group a
batch row of its own), so they never attend to the real queries or to each other's groups; the
exported graph does not have them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from h2a.export_tools.data.dataset import Target


@dataclass(frozen=True)
class DenoiseSettings:
    groups: int = 2  # noised copies of every ground-truth instance
    # DN-DETR's lambda: centres move by up to lambda/2 of the box size, sizes by up to lambda of themselves
    box_noise: float = 0.4
    label_noise: float = 0.2  # chance that a query's class is swapped for a random one


@dataclass
class DenoiseQueries:
    """Image b's group g is row b * groups + g; padding rows have `valid` False."""

    boxes: torch.Tensor  # (B*G, M, 4) noised cx, cy, w, h in [0, 1]
    labels: torch.Tensor  # (B*G, M) noised class index; padding holds the "no object" index
    target_boxes: torch.Tensor  # (B*G, M, 4) the clean boxes
    target_labels: torch.Tensor  # (B*G, M) the clean classes
    valid: torch.Tensor  # (B*G, M) bool


def make_denoise_queries(
    targets: list[Target], n_objects: int, settings: DenoiseSettings, seed: int, step: int
) -> DenoiseQueries:
    """Noised copies of every target instance. The noise of a sample depends on (seed, step, its
    data set index) only, so DDP ranks that each hold part of a batch draw what one process
    holding all of it would. A batch without instances still gets one padding query per row:
    under DDP every process must use the label embedding every step."""
    if settings.groups < 1:
        raise ValueError(f"denoising groups must be at least 1, not {settings.groups}")
    most = max([1, *(len(t.labels) for t in targets)])
    groups = settings.groups
    rows = len(targets) * groups
    target_boxes = torch.full((rows, most, 4), 0.5)  # (B*G, M, 4); padding: a harmless box
    target_boxes[..., 2:] = 0.1
    target_labels = torch.full((rows, most), n_objects, dtype=torch.long)  # (B*G, M)
    labels = target_labels.clone()
    uniform = torch.zeros(rows, most, 4)  # (B*G, M, 4) in [-1, 1]
    valid = torch.zeros(rows, most, dtype=torch.bool)
    for b, t in enumerate(targets):
        n = len(t.labels)
        draw = torch.Generator().manual_seed(hash((seed, step, t.index)) & 0x7FFF_FFFF_FFFF_FFFF)
        noise = torch.rand(groups, n, 4, generator=draw) * 2 - 1  # (G, n, 4)
        flip = torch.rand(groups, n, generator=draw) < settings.label_noise  # (G, n)
        swapped = torch.randint(0, n_objects, (groups, n), generator=draw)
        rows_b = slice(b * groups, (b + 1) * groups)
        target_boxes[rows_b, :n] = t.boxes
        target_labels[rows_b, :n] = t.labels
        labels[rows_b, :n] = torch.where(flip, swapped, t.labels.expand(groups, n))
        uniform[rows_b, :n] = noise
        valid[rows_b, :n] = True

    size = target_boxes[..., 2:].repeat(1, 1, 2)  # (B*G, M, 4): w, h, w, h
    scale = torch.tensor([0.5, 0.5, 1.0, 1.0]) * settings.box_noise
    # centres move by up to lambda/2 of the size, sizes by up to lambda of themselves
    boxes = (target_boxes + uniform * scale * size).clamp(1e-3, 1 - 1e-3)
    return DenoiseQueries(boxes, labels, target_boxes, target_labels, valid)
