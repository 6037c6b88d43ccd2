from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from h2a.export_tools.models import CaptionModel, make_config
from h2a.export_tools.models.decoding import greedy_decode
from h2a.runtime.decoding import banned_next_tokens, pick_next


def test_repetition_guard_bans_the_token_that_repeats_a_trigram() -> None:
    assert banned_next_tokens([5, 6, 7, 1, 5, 6], 3) == {7}
    assert banned_next_tokens([5, 6, 7, 5, 6, 9, 5, 6], 3) == {7, 9}
    assert banned_next_tokens([5, 6], 3) == set()
    assert banned_next_tokens([5, 6, 7, 5, 6], 0) == set()


def test_pick_next_skips_a_banned_argmax() -> None:
    logits = np.array([0.0, 1.0, 5.0, 3.0], np.float32)
    assert pick_next(logits, [2, 1, 2], 2) == 2  # after 2 came 1 -> 1 banned, 2 still wins
    assert pick_next(logits, [0, 2, 1, 0], 2) == 3  # after 0 came 2 -> 2 banned
    assert logits[2] == 5.0  # the caller's logits are not modified


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kv_cache_decoding_equals_full_recompute_in_torch(seed: int) -> None:
    torch.manual_seed(seed)
    cfg = make_config("tiny", 61).caption
    model = CaptionModel(cfg).eval()
    g = cfg.max_tag_tokens
    mask = torch.zeros(1, g)
    mask[:, :5] = 1
    with torch.no_grad():
        memory, bias = model.encode(
            torch.randn(1, cfg.n_image_tokens, cfg.d_image),
            torch.randint(0, 61, (1, g)),
            mask,
            torch.rand(1, g, 8),
        )
    kwargs: dict[str, Any] = {
        "bos_id": 2,
        "eos_id": 3,
        "no_repeat_ngram": 3,
        "max_new_tokens": 40,
        "stop_at_eos": False,
    }
    cached = greedy_decode(model, memory, bias, use_cache=True, **kwargs)
    full = greedy_decode(model, memory, bias, use_cache=False, **kwargs)
    assert len(cached) == 40
    assert cached == full


def test_step_logits_equal_teacher_forced_logits() -> None:
    torch.manual_seed(3)
    cfg = make_config("tiny", 50).caption
    model = CaptionModel(cfg).eval()
    memory = torch.randn(1, cfg.n_memory, cfg.d_model)
    bias = torch.zeros(1, cfg.n_memory)
    tokens = torch.randint(0, 50, (1, 9))
    with torch.no_grad():
        cross_k, cross_v = model.cross_kv(memory)
        full = model(tokens, cross_k, cross_v, bias)  # (1, 9, V)
        self_k, self_v = model.empty_cache(1)
        self_k.normal_()  # garbage past the valid length must be ignored
        self_v.normal_()
        for pos in range(9):
            logits, k, v = model.step(
                tokens[:, pos : pos + 1], torch.tensor([pos]), self_k, self_v, cross_k, cross_v, bias
            )
            self_k[:, :, :, pos] = k[:, :, :, 0]
            self_v[:, :, :, pos] = v[:, :, :, 0]
            torch.testing.assert_close(logits, full[:, pos], rtol=1e-4, atol=1e-4)
