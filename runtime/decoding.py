"""Greedy caption decoding over the `dec_step` graph, with a preallocated KV cache.

The loop mirrors Whisper's `decoding.py` in spirit: the cross-attention K/V arrive once from
`cap_encoder`; each step feeds one token and its position, gets next-token logits plus that
token's own K/V, and writes them into the cache at `position` (one buffer, per-layer views; the
graph never copies the cache). `use_cache=False` recomputes the whole prefix at every step with
the same graph: the reference the cache is checked against and the baseline `edge-bench` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from h2a.runtime.backends import GraphRunner
from h2a.runtime.manifest import DecoderConstants


def banned_next_tokens(tokens: list[int], ngram: int) -> set[int]:
    """Tokens that would repeat an n-gram already in `tokens` (the repetition guard).

    With ngram=3 and tokens [.. a b x .. a b], `x` is banned. Shared by the torch reference so both
    sides decode token for token alike.
    """
    if ngram <= 0 or len(tokens) < ngram:
        return set()
    prefix = tuple(tokens[len(tokens) - ngram + 1 :])
    banned = set()
    for start in range(len(tokens) - ngram + 1):
        if tuple(tokens[start : start + ngram - 1]) == prefix:
            banned.add(tokens[start + ngram - 1])
    return banned


def pick_next(logits: np.ndarray, tokens: list[int], ngram: int) -> int:
    """Greedy choice over logits (V,) with the repetition guard applied."""
    banned = banned_next_tokens(tokens, ngram)
    if banned:
        logits = logits.copy()
        logits[list(banned)] = -np.inf
    return int(np.argmax(logits))


@dataclass
class DecodeResult:
    tokens: list[int]  # generated ids, BOS excluded, EOS excluded
    steps: int  # dec_step calls made
    stopped_at_eos: bool


class GreedyDecoder:
    def __init__(self, step: GraphRunner, consts: DecoderConstants) -> None:
        self.step = step
        self.consts = consts
        shape = (consts.layers, 1, consts.heads, consts.max_len, consts.head_dim)
        self._self_k = np.zeros(shape, np.float32)  # (L, 1, H, P, dh), reused for every caption
        self._self_v = np.zeros(shape, np.float32)
        self._token = np.zeros((1, 1), np.int64)
        self._position = np.zeros((1,), np.int64)
        # The step graph reads one input per layer: views of the two buffers, made once.
        self._inputs = {"token": self._token, "position": self._position}
        for i in range(consts.layers):
            self._inputs[f"self_k_{i}"] = self._self_k[i]  # (1, H, P, dh), contiguous view
            self._inputs[f"self_v_{i}"] = self._self_v[i]

    def _begin(self, cross_k: np.ndarray, cross_v: np.ndarray, memory_bias: np.ndarray) -> dict[str, Any]:
        """The step inputs that stay fixed for one caption."""
        cross: dict[str, Any] = {"memory_bias": memory_bias}
        for i in range(self.consts.layers):
            cross[f"cross_k_{i}"] = cross_k[i]  # (1, H, M, dh) views of cap_encoder's output
            cross[f"cross_v_{i}"] = cross_v[i]
        return cross

    def _run_step(self, token: int, position: int, cross: dict[str, Any]) -> np.ndarray:
        self._token[0, 0] = token
        self._position[0] = position
        out = self.step.run({**self._inputs, **cross})
        self._self_k[:, :, :, position] = out["new_k"][:, :, :, 0]  # (L, 1, H, dh)
        self._self_v[:, :, :, position] = out["new_v"][:, :, :, 0]
        return out["logits"][0]  # (V,)

    def decode(
        self,
        cross_k: np.ndarray,
        cross_v: np.ndarray,
        memory_bias: np.ndarray,
        max_new_tokens: int | None = None,
        use_cache: bool = True,
        stop_at_eos: bool = True,
    ) -> DecodeResult:
        """Caption one frame (batch 1). Cache rows at or past `position` are masked by the graph,
        so the buffer needs no clearing between captions."""
        c = self.consts
        limit = c.max_len - 1 if max_new_tokens is None else min(max_new_tokens, c.max_len - 1)
        cross = self._begin(cross_k, cross_v, memory_bias)
        sequence = [c.bos_id]
        steps = 0
        for _ in range(limit):
            if use_cache:
                logits = self._run_step(sequence[-1], len(sequence) - 1, cross)
                steps += 1
            else:
                for position, token in enumerate(sequence):
                    logits = self._run_step(token, position, cross)
                    steps += 1
            nxt = pick_next(logits, sequence[1:], c.no_repeat_ngram)
            if stop_at_eos and nxt == c.eos_id:
                return DecodeResult(sequence[1:], steps, True)
            sequence.append(nxt)
        return DecodeResult(sequence[1:], steps, False)
