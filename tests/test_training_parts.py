"""Matching, losses and box ops on hand-made cases; dataset augmentations keep boxes right."""

from __future__ import annotations

import pytest
import torch

from h2a.export_tools.data.dataset import Target, swap_left_right
from h2a.export_tools.models.hoi_encoder import HOIOutput
from h2a.export_tools.training.box_ops import box_iou, cxcywh_to_xyxy, generalized_box_iou
from h2a.export_tools.training.hoi_loss import HOILoss
from h2a.export_tools.training.matcher import MatchCosts, match_instances, match_interactions


def test_giou_on_known_boxes() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
    iou, _ = box_iou(a, b)
    assert torch.allclose(iou, torch.tensor([[1 / 7, 1.0, 0.0]]))
    giou = generalized_box_iou(a, b)
    # overlap: hull 9, union 7 -> 1/7 - 2/9; disjoint: hull 12, union 8 -> 0 - 4/12
    assert torch.allclose(giou, torch.tensor([[1 / 7 - 2 / 9, 1.0, -1 / 3]]))


def _target() -> Target:
    return Target(
        boxes=torch.tensor([[0.3, 0.5, 0.2, 0.6], [0.6, 0.5, 0.1, 0.1]]),
        labels=torch.tensor([0, 1]),  # person, gun
        pairs=torch.tensor([[0, 1]]),
        actions=torch.tensor([[0.0, 1.0, 0.0]]),
        anomaly=torch.tensor([0.0, 1.0]),
        caption="",
        index=0,
    )


def _perfect_output(big: float = 12.0) -> HOIOutput:
    """4 instance queries: query 2 = the person, query 0 = the gun, the others "no object";
    3 interaction queries: query 1 points at (2, 0) with action 1."""
    boxes = torch.tensor(
        [[[0.6, 0.5, 0.1, 0.1], [0.9, 0.9, 0.05, 0.05], [0.3, 0.5, 0.2, 0.6], [0.1, 0.1, 0.1, 0.1]]]
    )
    obj = torch.full((1, 4, 3), -big)
    obj[0, 2, 0] = obj[0, 0, 1] = big
    obj[0, 1, 2] = obj[0, 3, 2] = big
    act = torch.full((1, 3, 3), -big)
    act[0, 1, 1] = big
    sub = torch.full((1, 3, 4), -big)
    objp = torch.full((1, 3, 4), -big)
    sub[0, 1, 2] = objp[0, 1, 0] = big  # the interacting query points at (person, gun) ...
    sub[0, 0, 3] = sub[0, 2, 3] = objp[0, 0, 3] = objp[0, 2, 3] = big  # ... idle ones at an empty slot
    anomaly = torch.tensor([[-big, big]])
    return HOIOutput(boxes, obj, act, sub, objp, anomaly, torch.zeros(1, 1, 4))


def test_matchers_pick_the_obvious_assignment() -> None:
    out, tgt = _perfect_output(), _target()
    inst = match_instances(out.obj_logits, out.boxes, [tgt], MatchCosts())
    pred, tgt_idx = inst[0]
    assert dict(zip(tgt_idx.tolist(), pred.tolist(), strict=True)) == {0: 2, 1: 0}
    inter = match_interactions(out.act_logits, out.sub_ptr, out.obj_ptr, [tgt], inst, MatchCosts())
    assert inter[0][0].tolist() == [1] and inter[0][1].tolist() == [0]


def test_loss_is_near_zero_for_a_perfect_prediction_and_grows_when_wrong() -> None:
    loss_fn = HOILoss(n_objects=2)
    total, parts = loss_fn(_perfect_output(), [_target()])
    assert parts["bbox"] < 1e-6 and parts["giou"] < 1e-6
    assert parts["cls"] < 1e-3 and parts["ptr"] < 1e-3 and parts["anomaly"] < 1e-3 and parts["act"] < 1e-3
    wrong = _perfect_output()
    wrong.sub_ptr[0, 1] = wrong.sub_ptr[0, 1].flip(-1)  # the matched query now points at instance 1
    _, wrong_parts = loss_fn(wrong, [_target()])
    assert wrong_parts["ptr"] > 5.0
    assert float(total) < 1e-2


def test_focal_action_loss_counts_unmatched_queries_as_no_action() -> None:
    loss_fn = HOILoss(n_objects=2)
    out = _perfect_output()
    out.act_logits[0, 0, 2] = 12.0  # an unmatched query claims an action
    _, parts = loss_fn(out, [_target()])
    assert parts["act"] > 1.0


def test_flip_swaps_left_and_right_words() -> None:
    assert swap_left_right("on the left side; then right.") == "on the right side; then left."
    assert swap_left_right("a bright light") == "a bright light"


def test_cxcywh_round_trip() -> None:
    box = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    assert torch.allclose(cxcywh_to_xyxy(box), torch.tensor([[0.4, 0.3, 0.6, 0.7]]))


def test_auxiliary_layers_are_matched_and_supervised_on_their_own() -> None:
    loss_fn = HOILoss(n_objects=2)
    good = _perfect_output()
    _, base = loss_fn(good, [_target()])
    good.aux = [(good.boxes.clone(), good.obj_logits.clone())]
    _, with_good_aux = loss_fn(good, [_target()])
    assert with_good_aux["bbox"] == pytest.approx(base["bbox"], abs=1e-6)  # a perfect layer adds nothing
    shuffled = _perfect_output()
    shuffled.aux = [(shuffled.boxes.flip(1), shuffled.obj_logits.flip(1))]  # same set, other order
    _, matched = loss_fn(shuffled, [_target()])
    assert matched["bbox"] == pytest.approx(base["bbox"], abs=1e-6)  # each layer gets its own matching
    off = _perfect_output()
    off.aux = [(off.boxes + 0.1, off.obj_logits.clone())]
    _, wrong = loss_fn(off, [_target()])
    assert wrong["bbox"] > base["bbox"] + 0.3  # 4 coordinates x 0.1 per matched box


def test_hoi_encoder_returns_auxiliary_outputs_only_when_asked() -> None:
    from h2a.export_tools.models import HOIEncoder, make_config

    cfg = make_config("tiny", 50).hoi
    model = HOIEncoder(cfg).eval()
    images = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    plain, with_aux = model(images), model(images, aux=True)
    assert plain.aux == [] and len(with_aux.aux) == cfg.inst_dec_layers - 1
    assert with_aux.aux[0][0].shape == plain.boxes.shape
    torch.testing.assert_close(plain.boxes, with_aux.boxes)


def test_sync_batchnorm_round_trip_keeps_trained_statistics() -> None:
    """DDP on GPUs trains with SyncBatchNorm; the checkpoint and export must see plain BatchNorm
    with the same values (PyTorch runs SyncBatchNorm on GPUs only, so CPU runs convert nothing)."""
    from h2a.export_tools.models import HOIEncoder, make_config
    from h2a.export_tools.training import distributed as dist

    model = HOIEncoder(make_config("tiny", 50).hoi)
    assert dist.sync_batchnorm(model, torch.device("cpu")) == 0  # a plain CPU run: untouched
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 0
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None:
            m.running_mean.uniform_()
            m.weight.data.uniform_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, child in model.named_children():  # what sync_batchnorm does under DDP on CUDA
        model.add_module(name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == n_bn
    dist.plain_batchnorm(model)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value)
