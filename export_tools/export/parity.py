"""Parity of exported graphs: ONNX Runtime against torch on fresh random inputs, and greedy
decoding through the runtime's own loop against the torch reference.

Relative error is measured per output as max|ort - torch| / max|torch| (the output's scale), so
near-zero elements do not inflate it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from h2a.export_tools.export.graphs import graph_module, random_inputs
from h2a.export_tools.models import CaptionModel, HOIEncoder
from h2a.export_tools.models.decoding import greedy_decode
from h2a.runtime.backends.onnxruntime_backend import OrtGraph
from h2a.runtime.decoding import GreedyDecoder
from h2a.runtime.graphs import GRAPHS, graph_spec
from h2a.runtime.manifest import DecoderConstants

FP32_TOLERANCE = 1e-4


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return float(np.abs(got - ref).max() / max(scale, 1e-12)) if ref.size else 0.0


@dataclass
class ParityReport:
    graph_errors: dict[str, dict[str, float]]  # graph -> output -> relative error
    decode_steps: int
    decode_match: bool  # ORT (KV cache) tokens == torch reference tokens
    cache_match: bool  # ORT with cache == ORT recomputing the prefix

    @property
    def worst(self) -> float:
        return max(e for outputs in self.graph_errors.values() for e in outputs.values())

    def ok(self, tolerance: float = FP32_TOLERANCE) -> bool:
        return self.worst < tolerance and self.decode_match and self.cache_match


@torch.no_grad()
def graph_parity(
    name: str, onnx_bytes: bytes, hoi: HOIEncoder, cap: CaptionModel, seed: int, batch: int = 2
) -> dict[str, float]:
    spec = graph_spec(name, cap.cfg.dec_layers)
    inputs = random_inputs(
        spec, hoi, cap, batch if name != "dec_step" else 1, torch.Generator().manual_seed(seed)
    )
    expected = graph_module(spec, hoi, cap)(*inputs)
    got = OrtGraph(onnx_bytes).run({t.name: x.numpy() for t, x in zip(spec.inputs, inputs, strict=True)})
    return {
        t.name: relative_error(got[t.name], ref.numpy())
        for t, ref in zip(spec.outputs, expected, strict=True)
    }


@torch.no_grad()
def decode_parity(
    graphs: dict[str, bytes],
    hoi: HOIEncoder,
    cap: CaptionModel,
    consts: DecoderConstants,
    steps: int,
    seed: int,
) -> tuple[list[int], list[int], list[int]]:
    """-> (torch tokens, ORT tokens with cache, ORT tokens recomputing the prefix), EOS ignored."""
    g = torch.Generator().manual_seed(seed)
    enc_inputs = random_inputs(GRAPHS["cap_encoder"], hoi, cap, 1, g)
    image = torch.randn(1, 3, hoi.cfg.image_size, hoi.cfg.image_size, generator=g)
    image_tokens = hoi(image).image_tokens
    enc_inputs = (image_tokens, *enc_inputs[1:])
    memory, memory_bias = cap.encode(*enc_inputs)
    reference = greedy_decode(
        cap, memory, memory_bias, consts.bos_id, consts.eos_id, consts.no_repeat_ngram, steps, True, False
    )
    names = GRAPHS["cap_encoder"].input_names
    encoded = OrtGraph(graphs["cap_encoder"]).run(
        {n: x.numpy() for n, x in zip(names, enc_inputs, strict=True)}
    )
    decoder = GreedyDecoder(OrtGraph(graphs["dec_step"]), consts)
    args = (encoded["cross_k"], encoded["cross_v"], encoded["memory_bias"])
    cached = decoder.decode(*args, max_new_tokens=steps, use_cache=True, stop_at_eos=False).tokens
    recomputed = decoder.decode(*args, max_new_tokens=steps, use_cache=False, stop_at_eos=False).tokens
    return reference, cached, recomputed


def check_parity(
    graphs: dict[str, bytes],
    hoi: HOIEncoder,
    cap: CaptionModel,
    consts: DecoderConstants,
    steps: int = 32,
    seed: int = 1234,
) -> ParityReport:
    errors = {name: graph_parity(name, data, hoi, cap, seed) for name, data in graphs.items()}
    reference, cached, recomputed = decode_parity(graphs, hoi, cap, consts, steps, seed)
    return ParityReport(errors, len(reference), cached == reference, cached == recomputed)
