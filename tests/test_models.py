from __future__ import annotations

import pytest
import torch

from h2a.export_tools.models import CaptionModel, HOIEncoder, make_config
from h2a.export_tools.models.backbone import resnet50
from h2a.export_tools.models.hoi_encoder import pointer_logits

VOCAB = 97


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_hoi_encoder_output_shapes(preset: str) -> None:
    cfg = make_config(preset, VOCAB).hoi
    model = HOIEncoder(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, cfg.image_size, cfg.image_size))
    n, q, t = cfg.n_inst_queries, cfg.n_int_queries, cfg.n_image_tokens
    assert out.boxes.shape == (2, n, 4)
    assert out.obj_logits.shape == (2, n, cfg.n_objects + 1)
    assert out.act_logits.shape == (2, q, cfg.n_actions)
    assert out.sub_ptr.shape == out.obj_ptr.shape == (2, q, n)
    assert out.anomaly_logits.shape == (2, 6)
    assert out.image_tokens.shape == (2, t, cfg.d_model)
    assert bool(((out.boxes >= 0) & (out.boxes <= 1)).all())


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_caption_model_shapes(preset: str) -> None:
    cfg = make_config(preset, VOCAB).caption
    model = CaptionModel(cfg).eval()
    g = cfg.max_tag_tokens
    with torch.no_grad():
        memory, bias = model.encode(
            torch.randn(1, cfg.n_image_tokens, cfg.d_image),
            torch.randint(0, VOCAB, (1, g)),
            torch.ones(1, g),
            torch.rand(1, g, 8),
        )
        cross_k, cross_v = model.cross_kv(memory)
        logits = model(torch.randint(0, VOCAB, (1, 5)), cross_k, cross_v, bias)
    assert memory.shape == (1, cfg.n_memory, cfg.d_model)
    assert cross_k.shape == (cfg.dec_layers, 1, cfg.n_heads, cfg.n_memory, cfg.head_dim)
    assert logits.shape == (1, 5, VOCAB)


def test_base_preset_is_paper_scale() -> None:
    cfg = make_config("base", VOCAB)
    assert cfg.hoi.backbone_depths == (3, 4, 6, 3) and cfg.hoi.c5_channels == 2048
    assert (cfg.caption.dec_layers, cfg.caption.d_model, cfg.caption.n_heads) == (4, 384, 6)


def test_resnet50_matches_the_standard_parameter_count() -> None:
    # torchvision's resnet50 has 25,557,032 parameters; ours has no fc head (2048*1000 + 1000).
    model = resnet50(frozen_bn=False)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032 - 2_049_000


def test_frozen_bn_loads_torchvision_style_keys() -> None:
    trainable = resnet50(frozen_bn=False)
    for module in trainable.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None
            module.running_mean.uniform_(-1, 1)
            module.weight.data.uniform_(0.5, 1.5)
    state = trainable.state_dict()  # carries num_batches_tracked like a torchvision file
    frozen = resnet50(frozen_bn=True)
    result = frozen.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), trainable.eval()(x), rtol=1e-4, atol=1e-4)


def test_pointer_picks_the_instance_it_points_at() -> None:
    torch.manual_seed(0)
    instances = torch.randn(1, 7, 16)  # (B, N, D)
    targets = torch.tensor([4, 0, 6])
    pointers = instances[:, targets] * 3.0 + 0.01 * torch.randn(1, 3, 16)  # scale must not matter
    logits = pointer_logits(pointers, instances, tau=0.05)  # (B, Q, N)
    assert logits.shape == (1, 3, 7)
    assert logits.argmax(-1).tolist() == [targets.tolist()]
    assert float(logits.max()) <= 1 / 0.05 + 1e-4  # cosine similarity / tau


def test_model_pointers_index_existing_instances() -> None:
    cfg = make_config("tiny", VOCAB).hoi
    with torch.no_grad():
        out = HOIEncoder(cfg).eval()(torch.randn(3, 3, cfg.image_size, cfg.image_size))
    for ptr in (out.sub_ptr, out.obj_ptr):
        picked = ptr.argmax(-1)
        assert bool(((picked >= 0) & (picked < cfg.n_inst_queries)).all())
        assert float(ptr.abs().max()) <= 1 / cfg.pointer_tau + 1e-3
