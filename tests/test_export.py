"""Export parity on a real tiny model: ONNX Runtime against torch, graph by graph and decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from h2a.export_tools.export.exporter import decoder_constants, export_graphs
from h2a.export_tools.export.parity import FP32_TOLERANCE, decode_parity, graph_parity
from h2a.export_tools.export.torch_cli import random_checkpoint
from h2a.runtime.backends.onnxruntime_backend import OrtGraph
from h2a.runtime.bundle import load_bundle
from h2a.runtime.graphs import GRAPHS, graph_spec
from h2a.runtime.tokenizer import CaptionTokenizer


@pytest.fixture(scope="module")
def exported():  # type: ignore[no-untyped-def]
    ckpt = random_checkpoint("tiny", seed=7)
    return ckpt, export_graphs(ckpt, progress=False)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_is_opset17_with_the_documented_io(exported, name: str) -> None:  # type: ignore[no-untyped-def]
    ckpt, graphs = exported
    model = onnx.load_from_string(graphs[name])
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    spec = graph_spec(name, ckpt.config.caption.dec_layers)
    assert [i.name for i in model.graph.input] == spec.input_names
    assert [o.name for o in model.graph.output] == spec.output_names
    if name == "dec_step":  # one cache input per layer: no in-graph slicing (Gather/Split) of caches
        assert "self_k_1" in spec.input_names and "self_k" not in spec.input_names
    # every weight is an initializer, even one shared by decoder layers (the box head): INT8
    # tools must not mistake it for an activation
    initializers = {i.name for i in model.graph.initializer}
    assert not [n.name for n in model.graph.node if n.op_type == "Identity" and n.input[0] in initializers]
    if name == "hoi":
        assert {"TopK", "GatherElements"} <= {n.op_type for n in model.graph.node}  # query selection


@pytest.mark.parametrize("name", list(GRAPHS))
@pytest.mark.parametrize("seed", [11, 12])
def test_onnxruntime_matches_torch(exported, name: str, seed: int) -> None:  # type: ignore[no-untyped-def]
    ckpt, graphs = exported
    errors = graph_parity(name, graphs[name], ckpt.hoi, ckpt.caption, seed)
    print(name, errors)
    assert set(errors) == set(GRAPHS[name].output_names)
    assert max(errors.values()) < FP32_TOLERANCE


def test_hoi_batch_is_dynamic(exported) -> None:  # type: ignore[no-untyped-def]
    ckpt, graphs = exported
    size = ckpt.config.hoi.image_size
    out = OrtGraph(graphs["hoi"]).run({"images": np.random.rand(3, 3, size, size).astype(np.float32)})
    assert out["boxes"].shape == (3, ckpt.config.hoi.n_inst_queries, 4)
    assert out["image_tokens"].shape[0] == 3


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_greedy_tokens_identical_over_32_steps(exported, seed: int) -> None:  # type: ignore[no-untyped-def]
    ckpt, graphs = exported
    consts = decoder_constants(ckpt, CaptionTokenizer(ckpt.tokenizer_json))
    reference, cached, recomputed = decode_parity(graphs, ckpt.hoi, ckpt.caption, consts, 32, seed)
    assert len(reference) == 32
    assert cached == reference  # runtime loop on ORT, KV cache  ==  torch reference
    assert recomputed == cached  # ORT recomputing the prefix  ==  ORT with the cache


def test_bundle_records_parity_and_members(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    manifest = bundle.manifest
    assert set(manifest.graphs) == set(GRAPHS)
    parity = manifest.provenance["parity"]
    assert parity["greedy_match"] and parity["cache_match"] and parity["greedy_steps"] == 32
    for errors in parity["max_relative_error"].values():
        assert max(errors.values()) < FP32_TOLERANCE
    tokenizer = CaptionTokenizer(bundle.tokenizer_json())
    assert tokenizer.vocab_size == manifest.decoder.vocab_size
    assert tokenizer.decode(tokenizer.encode("person aim gun")) == "person aim gun"


def test_readme_graph_table_is_the_contract() -> None:
    from pathlib import Path

    from h2a.runtime.graphs import markdown_table

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "regenerate the README table: python -m h2a.runtime.graphs"
