"""The OpenVINO backend against ONNX Runtime on the same tiny bundle: parity (f32 and bf16), the
compiled-graph cache, the copy-free decoder loop, backend choice and the bf16 accuracy gate.

Real computations: the bundle is exported for real, both backends run its graphs on this CPU.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the [openvino] extra is not installed")

from h2a.runtime.backends import openvino_backend
from h2a.runtime.backends.openvino_backend import OvGraph, resolve_precision
from h2a.runtime.bundle import load_bundle
from h2a.runtime.engine import BackendOptions, Engine, openvino_bf16_gate_passed, select_backend
from h2a.runtime.errors import BackendError

from .conftest import run_cli
from .test_edge_run import write_video

#: bf16 keeps 8 bits of mantissa: relative errors of about 2^-8 per op, compounding over the graph.
BF16_RELATIVE_L2 = 0.05
FRAMES = [np.random.default_rng(s).integers(0, 256, (120, 160, 3), dtype=np.uint8) for s in range(3)]


def _engines(bundle: Path, cache: Path | None, precision: str = "f32") -> tuple[Engine, Engine]:
    b = load_bundle(bundle)
    return Engine(b, options=BackendOptions("onnxruntime")), Engine(
        b, options=BackendOptions("openvino", precision, cache)
    )


def _cached(graph: object) -> bool:
    assert isinstance(graph, OvGraph)
    return graph.from_cache


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / (np.linalg.norm(a) + 1e-12))


def test_f32_matches_onnxruntime_graph_by_graph_and_token_by_token(tiny_bundle: Path, tmp_path: Path) -> None:
    ort, ov = _engines(tiny_bundle, tmp_path / "cache")
    assert ov.backend == "openvino" and ov.precision == "f32"
    for frame in FRAMES:
        images = ort.preprocess(frame)[0]
        a, b = ort.hoi.run({"images": images}), ov.hoi.run({"images": images})
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-4, err_msg=name)
        det = ort.detect(frame)
        enc_a, enc_b = ort.encode_caption(det), ov.encode_caption(det)
        for name in enc_a:
            np.testing.assert_allclose(enc_b[name], enc_a[name], rtol=1e-4, atol=1e-4, err_msg=name)
        tokens = ort.decoder.decode(enc_a["cross_k"], enc_a["cross_v"], enc_a["memory_bias"], 24, True, False)
        cached = ov.decoder.decode(enc_b["cross_k"], enc_b["cross_v"], enc_b["memory_bias"], 24, True, False)
        full = ov.decoder.decode(enc_b["cross_k"], enc_b["cross_v"], enc_b["memory_bias"], 24, False, False)
        assert cached.tokens == tokens.tokens == full.tokens


def test_bf16_within_its_tolerance_and_greedy_tokens_agree(tiny_bundle: Path, tmp_path: Path) -> None:
    ort, ov = _engines(tiny_bundle, tmp_path / "cache", "bf16")
    assert ov.precision == "bf16"
    agree = total = 0
    for frame in FRAMES:
        images = ort.preprocess(frame)[0]
        a, b = ort.hoi.run({"images": images}), ov.hoi.run({"images": images})
        worst = max(_relative_l2(a[n], b[n]) for n in ("anomaly_logits", "obj_logits", "image_tokens"))
        assert worst < BF16_RELATIVE_L2
        det = ort.detect(frame)
        x, y = ort.explain(det).tokens, ov.explain(det).tokens
        agree += sum(p == q for p, q in zip(x, y, strict=False))
        total += max(len(x), len(y), 1)
    assert agree / total >= 0.9  # the gate's default token agreement


def test_compiled_graphs_are_cached_by_content_and_a_damaged_file_is_rebuilt(
    tiny_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b, cache = load_bundle(tiny_bundle), tmp_path / "cache"
    first = Engine(b, options=BackendOptions("openvino", "f32", cache))
    files = sorted(cache.glob("*.blob"))
    assert len(files) == 3 and not _cached(first.hoi)
    sha = b.manifest.members[b.manifest.graphs["hoi"].member].sha256
    assert any(f.name.startswith(sha[:32]) and "-f32-" in f.name for f in files)
    second = Engine(b, options=BackendOptions("openvino", "f32", cache))
    assert _cached(second.hoi) and _cached(second.decoder.step)
    images = first.preprocess(FRAMES[0])[0]
    for name, value in first.hoi.run({"images": images}).items():
        np.testing.assert_array_equal(second.hoi.run({"images": images})[name], value)
    hoi_blob = next(f for f in files if f.name.startswith(sha[:32]))
    hoi_blob.write_bytes(hoi_blob.read_bytes()[:1000])  # truncated by a full disk, say
    with caplog.at_level(logging.WARNING, logger="h2a.openvino"):
        third = Engine(b, options=BackendOptions("openvino", "f32", cache))
    assert "damaged OpenVINO cache file" in caplog.text and not _cached(third.hoi)
    assert hoi_blob.stat().st_size > 1000  # replaced by a good one
    # another precision is another compiled graph
    Engine(b, options=BackendOptions("openvino", "bf16", cache))
    assert len(list(cache.glob("*-bf16-*.blob"))) == 3


def test_decoder_steps_bind_no_new_tensors(tiny_bundle: Path) -> None:
    """The KV cache, token and position buffers are bound once; a caption rebinds only its own cross
    K/V and memory bias, so a longer caption costs no more bindings than a short one."""
    ov = Engine(load_bundle(tiny_bundle), options=BackendOptions("openvino", "f32", None))
    step = ov.decoder.step
    assert isinstance(step, OvGraph)
    det = ov.detect(FRAMES[0])
    enc = ov.encode_caption(det)
    ov.decoder.decode(enc["cross_k"], enc["cross_v"], enc["memory_bias"], 3, True, False)
    counts = []
    for tokens in (4, 30):
        enc = ov.encode_caption(det)  # new cross K/V arrays, as for every caption
        before = step.bindings
        ov.decoder.decode(enc["cross_k"], enc["cross_v"], enc["memory_bias"], tokens, True, False)
        counts.append(step.bindings - before)
    layers = ov.manifest.decoder.layers
    assert counts == [2 * layers + 1, 2 * layers + 1]


def test_backend_choice(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = load_bundle(tiny_bundle)
    assert select_backend(b, "auto") == "openvino"
    assert select_backend(b, "onnxruntime") == "onnxruntime"
    with pytest.raises(BackendError, match="holds ONNX graphs; build TensorRT engines"):
        select_backend(b, "tensorrt")
    import h2a.runtime.engine as engine_module

    monkeypatch.setattr(engine_module, "backend_available", lambda name: name != "openvino")
    assert select_backend(b, "auto") == "onnxruntime"
    with pytest.raises(BackendError, match=r"--backend openvino: it is not installed here \(pip install"):
        select_backend(b, "openvino")


def test_auto_precision_needs_native_bf16_and_a_passed_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    for native, passed, expected in ((True, True, "bf16"), (True, False, "f32"), (False, True, "f32")):
        monkeypatch.setattr(openvino_backend, "native_bf16", lambda native=native: native)
        assert resolve_precision("auto", passed) == expected
    assert resolve_precision("f32", True) == "f32"


def test_bf16_gate_is_recorded_in_the_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "ds"
    assert (
        run_cli("h2a.export_tools.data.generate", "--out", str(data), "--count", "60", "--quiet").returncode
        == 0
    )
    bundle = tmp_path / "tiny.plan"
    shutil.copy(tiny_bundle, bundle)
    common = ["h2a.calibration.cli", "report", "--fp32", str(bundle), "--openvino-bf16", "--data", str(data)]
    refused = run_cli(*common, "--min-token-agreement", "1.01", "--quiet")
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(f"edge-calibrate: error: OpenVINO bf16 refused for {bundle}")
    )
    assert bundle.exists() and not openvino_bf16_gate_passed(load_bundle(bundle))
    report = tmp_path / "gate.json"
    # a random-init model's proposal scores are near ties that bf16 reorders (boxes move): only a
    # lenient budget lets it through, which is what the gate is for
    lenient = [
        "--max-auc-drop",
        "1",
        "--max-map-drop",
        "1",
        "--min-token-agreement",
        "0",
        "--max-hoi-error",
        "10",
    ]
    passed = run_cli(*common, *lenient, "--json", str(report), "--quiet")
    assert passed.returncode == 0, passed.stderr
    assert "OpenVINO bf16 recorded" in passed.stdout
    gate = load_bundle(bundle).manifest.provenance["openvino"]["bf16_gate"]
    assert gate["passed"] and gate["backend"] == "openvino" and gate["openvino"]
    assert json.loads(report.read_text())["deltas"]["hoi_output_error"] > 0
    assert openvino_bf16_gate_passed(load_bundle(bundle))


def test_edge_run_on_openvino(tiny_bundle: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 12)
    cache = tmp_path / "cache"
    args = ["h2a.edge.run_cli", "--engine", str(tiny_bundle), "--source", str(video), "--dry-run"]
    result = run_cli(*args, "--backend", "openvino", "--ov-cache", str(cache), timeout=300)
    assert result.returncode == 0, result.stderr
    assert (
        "backend=openvino" in result.stderr + result.stdout
        and "precision=f32" in result.stderr + result.stdout
    )
    assert len(list(cache.glob("*.blob"))) == 3
    wrong = run_cli(*args, "--backend", "tensorrt", timeout=300)
    assert wrong.returncode == 2
    assert "holds ONNX graphs" in wrong.stderr.strip().splitlines()[-1]
