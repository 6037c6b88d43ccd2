"""Query denoising (training only): the noise stays within DN-DETR's bounds, is the same however a
batch is split, the noised queries never see padding or each other's images, and the loss
rewards giving the clean box back."""

from __future__ import annotations

import pytest
import torch

from h2a.export_tools.data.dataset import Target
from h2a.export_tools.models import HOIEncoder, make_config
from h2a.export_tools.training.denoising import DenoiseSettings, make_denoise_queries
from h2a.export_tools.training.hoi_loss import HOILoss

CFG = make_config("tiny", 10).hoi
N_OBJECTS = CFG.n_objects


def _target(index: int, boxes: list[list[float]], labels: list[int]) -> Target:
    return Target(
        boxes=torch.tensor(boxes),
        labels=torch.tensor(labels),
        pairs=torch.zeros(0, 2, dtype=torch.long),
        actions=torch.zeros(0, CFG.n_actions),
        anomaly=torch.zeros(CFG.n_anomalies),
        caption="",
        index=index,
    )


TARGETS = [
    _target(7, [[0.3, 0.4, 0.2, 0.5], [0.7, 0.6, 0.05, 0.04]], [0, 3]),
    _target(8, [[0.5, 0.5, 0.4, 0.1]], [1]),
]


def test_noise_stays_within_dn_detr_bounds_and_padding_is_marked() -> None:
    settings = DenoiseSettings(groups=3, box_noise=0.4, label_noise=0.0)
    dn = make_denoise_queries(TARGETS, N_OBJECTS, settings, seed=0, step=0)
    assert dn is not None
    assert dn.boxes.shape == (6, 2, 4) and dn.labels.shape == dn.valid.shape == (6, 2)
    assert dn.valid.tolist() == [[True, True]] * 3 + [[True, False]] * 3  # image b's groups: rows 3b..3b+2
    assert bool((dn.labels[dn.valid] == dn.target_labels[dn.valid]).all())  # no label noise asked for
    assert bool((dn.labels[~dn.valid] == N_OBJECTS).all())
    clean, noised = dn.target_boxes[dn.valid], dn.boxes[dn.valid]  # (k, 4)
    size = clean[:, 2:]
    assert bool(((noised[:, :2] - clean[:, :2]).abs() <= 0.2 * size + 1e-6).all())
    assert bool(((noised[:, 2:] - size).abs() <= 0.4 * size + 1e-6).all())
    assert not torch.equal(noised, clean)
    assert not torch.equal(dn.boxes[0], dn.boxes[1])  # groups draw their own noise


def test_label_noise_swaps_about_the_asked_share() -> None:
    many = [_target(i, [[0.5, 0.5, 0.2, 0.2]] * 10, [2] * 10) for i in range(40)]
    dn = make_denoise_queries(many, N_OBJECTS, DenoiseSettings(groups=2, label_noise=0.5), seed=1, step=3)
    assert dn is not None
    changed = float((dn.labels != dn.target_labels).float().mean())
    assert 0.3 < changed < 0.5  # half are redrawn, and a redraw sometimes draws class 2 again


def test_a_sample_draws_the_same_noise_however_the_batch_is_split() -> None:
    """DDP ranks each hold part of a batch; the noise must not depend on the split, or two
    processes would train differently from one."""
    settings = DenoiseSettings()
    whole = make_denoise_queries(TARGETS, N_OBJECTS, settings, seed=4, step=11)
    second = make_denoise_queries(TARGETS[1:], N_OBJECTS, settings, seed=4, step=11)
    later = make_denoise_queries(TARGETS[1:], N_OBJECTS, settings, seed=4, step=12)
    assert whole is not None and second is not None and later is not None
    torch.testing.assert_close(whole.boxes[2:, :1], second.boxes)
    assert not torch.equal(second.boxes, later.boxes)


def test_a_batch_without_instances_still_runs_the_denoising_pass() -> None:
    """Every process must use the label embedding every step, or DDP waits for its gradient."""
    empty = _target(0, [], [])
    empty.boxes = torch.zeros(0, 4)
    dn = make_denoise_queries([empty], N_OBJECTS, DenoiseSettings(groups=2), seed=0, step=0)
    assert dn.boxes.shape == (2, 1, 4) and not bool(dn.valid.any())


def _model() -> HOIEncoder:
    torch.manual_seed(0)
    return HOIEncoder(CFG).eval()


def test_noised_queries_see_neither_padding_nor_other_images() -> None:
    model = _model()
    size = model.cfg.image_size
    dn = make_denoise_queries(TARGETS, model.cfg.n_objects, DenoiseSettings(groups=2), seed=0, step=0)
    assert dn is not None
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(images, denoise=(dn.boxes, dn.labels, dn.valid))
        assert len(out.denoised) == model.cfg.inst_dec_layers
        boxes, logits = out.denoised[-1]
        assert boxes.shape == (4, 2, 4) and logits.shape == (4, 2, model.cfg.n_objects + 1)
        # change the padding query of image 1 and image 0 itself: image 1's real query is unmoved
        moved = dn.boxes.clone()
        moved[2:, 1] = torch.tensor([0.9, 0.1, 0.3, 0.3])
        other = images.clone()
        other[0] = torch.randn(3, size, size)
        again, _ = model(other, denoise=(moved, dn.labels, dn.valid)).denoised[-1]
    torch.testing.assert_close(again[2:, 0], boxes[2:, 0])
    assert not torch.allclose(again[:2], boxes[:2])


def test_the_denoising_loss_is_zero_for_the_clean_box_and_grows_with_the_error() -> None:
    model = _model()
    n = model.cfg.n_objects
    dn = make_denoise_queries(TARGETS, n, DenoiseSettings(groups=1), seed=0, step=0)
    assert dn is not None
    size = model.cfg.image_size
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size), denoise=(dn.boxes, dn.labels, dn.valid))
    loss = HOILoss(n)
    perfect_logits = torch.nn.functional.one_hot(dn.target_labels, n + 1).float() * 50.0  # (B, M, C+1)
    out.denoised = [(dn.target_boxes, perfect_logits)]
    _, exact = loss(out, TARGETS, dn)
    out.denoised = [(dn.target_boxes + torch.tensor([0.05, 0.0, 0.0, 0.0]), perfect_logits)]
    _, shifted = loss(out, TARGETS, dn)
    wrong = perfect_logits.roll(1, dims=-1)
    out.denoised = [(dn.target_boxes, wrong)]
    _, mislabelled = loss(out, TARGETS, dn)
    assert exact["dn"] == pytest.approx(0.0, abs=1e-4)
    assert shifted["dn"] > 0.1 and mislabelled["dn"] > 10.0
