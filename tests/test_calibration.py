"""INT8: calibration set, Q/DQ graphs, the accuracy gate, the legacy calibrator's cache, BN folding.

Real computations throughout: frames written with OpenCV, graphs quantized by ONNX Runtime's
tools and run by ONNX Runtime, bundles read back through the runtime's checks.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
import torch

from h2a.calibration import calib_set, cpu_features
from h2a.calibration.gate import Budget, judge, token_agreement
from h2a.calibration.legacy_calibrator import CacheKey, CalibrationCache, CalibrationFeeder, cache_name
from h2a.calibration.qdq import activation_products
from h2a.calibration.sensitivity import group_of
from h2a.export_tools.models.backbone import FrozenBatchNorm2d, ResNet, fold_batch_norms
from h2a.runtime import cpu_features as runtime_cpu_features
from h2a.runtime.bundle import load_bundle
from h2a.runtime.engine import Engine
from tests.conftest import run_cli


def _textured(seed: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calib") / "ds"
    result = run_cli(
        "h2a.export_tools.data.generate", "--out", str(out), "--count", "200", "--seed", "3", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def calib_npz(dataset: Path, tiny_bundle: Path) -> Path:
    out = dataset.parent / "calib.npz"
    result = run_cli(
        "h2a.calibration.cli", "collect", "--images", str(dataset / "images"),
        "--frames", "24", "--engine", str(tiny_bundle), "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def _run_quantize(tiny_bundle: Path, calib: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "h2a.calibration.cli", "quantize", "--engine", str(tiny_bundle), "--calib", str(calib),
        "--out", str(out), "--quiet", *args,
    )  # fmt: skip


def _quantize(tiny_bundle: Path, calib: Path, out: Path, target: str = "cpu", *extra: str) -> None:
    result = _run_quantize(tiny_bundle, calib, out, "--target", target, "--min-speedup", "0", *extra)
    assert result.returncode == 0, result.stderr


def test_collect_is_deterministic_spreads_and_drops_duplicates(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"{i:02d}.png"), _textured(i))
    for i in range(6):  # exact and near-exact copies (one level of noise)
        cv2.imwrite(
            str(folder / f"dup{i}.png"), np.clip(_textured(i).astype(int) + 1, 0, 255).astype(np.uint8)
        )
    runs = [calib_set.collect(calib_set.image_folder_frames(folder, 30), 30, 64) for _ in range(2)]
    (a, dropped), (b, _) = runs
    assert dropped == 6 and len(a) == 12
    assert a.sha256 == b.sha256 and a.origins == b.origins
    few, _ = calib_set.collect(calib_set.image_folder_frames(folder, 4), 4, 64)
    assert len(few) == 4 and len(set(few.origins)) == 4


def test_collect_from_video_skips_a_frozen_scene(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (160, 120))
    for i in range(60):
        writer.write(_textured(i // 20))  # three scenes, each held for 20 frames
    writer.release()
    calib, dropped = calib_set.collect(calib_set.video_frames(video, 10), 10, 64)
    assert len(calib) == 3 and dropped > 0


def test_calibration_set_round_trip_and_tamper_refusal(tmp_path: Path) -> None:
    canvases = np.stack([cv2.resize(_textured(i), (64, 64)) for i in range(5)])
    calib = calib_set.CalibrationSet(
        canvases, [f"f{i}" for i in range(5)], 114, calib_set.frames_sha256(canvases)
    )
    path = tmp_path / "c.npz"
    calib_set.save(calib, path)
    back = calib_set.load(path)
    assert back.sha256 == calib.sha256 and np.array_equal(back.canvases, canvases)
    with np.load(path) as data:
        fields = dict(data)
    fields["canvases"] = fields["canvases"].copy()
    fields["canvases"][0, 0, 0, 0] ^= 1
    np.savez(path, **fields)
    with pytest.raises(calib_set.CalibrationError, match="sha256"):
        calib_set.load(path)
    path.write_bytes(b"not an npz")
    with pytest.raises(calib_set.CalibrationError, match="unreadable"):
        calib_set.load(path)


def test_normalised_calibration_frames_equal_the_runtime_input(calib_npz: Path, tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    p = bundle.manifest.preprocess
    calib = calib_set.load(calib_npz)
    first = next(calib.images(p.mean, p.std))
    canvas = calib.canvases[0]  # RGB; the runtime reads BGR frames
    frame = np.ascontiguousarray(canvas[:, :, ::-1])
    runtime_input, _ = Engine(bundle).preprocess(frame)
    np.testing.assert_array_equal(first, runtime_input)


@pytest.fixture(scope="module")
def cpu_int8(calib_npz: Path, tiny_bundle: Path) -> Path:
    out = calib_npz.parent / "int8.plan"
    _quantize(tiny_bundle, calib_npz, out)
    return out


def test_cpu_int8_bundle_loads_and_fits_its_budgets(cpu_int8: Path, tiny_bundle: Path) -> None:
    out = cpu_int8
    bundle = load_bundle(out)
    calibration = bundle.manifest.provenance["calibration"]
    assert calibration["target"] == "cpu" and calibration["calibration_set_sha256"]
    for name, graph in bundle.manifest.graphs.items():
        assert graph.precision == "int8", name
        assert graph.accuracy_delta is not None
        assert graph.accuracy_delta["output_relative_error"] <= calibration["graphs"][name]["budget"]
        model = onnx.load_from_string(bundle.graph_bytes(name))
        ops = {n.op_type for n in model.graph.node}
        assert ops & {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger"}, name
    assert calibration["held_out"]["caption_token_agreement"] >= 0.9
    hoi = onnx.load_from_string(bundle.graph_bytes("hoi"))
    assert "SpaceToDepth" in {n.op_type for n in hoi.graph.node}  # the CPU stem rewrite
    producers = {out: n.op_type for n in hoi.graph.node for out in n.output}
    products = activation_products(onnx.load_from_string(load_bundle(tiny_bundle).graph_bytes("hoi")))
    assert products  # attention's Q.K^T and A.V exist, and stay float MatMuls fed by float tensors
    for node in (n for n in hoi.graph.node if n.name in products):
        assert node.op_type == "MatMul"
        assert all(producers.get(i) not in ("DequantizeLinear", "DynamicQuantizeLinear") for i in node.input)
    with zipfile.ZipFile(out) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert set(manifest["members"]) == {g["member"] for g in manifest["graphs"].values()} | {"tokenizer.json"}
    engine = Engine(bundle)
    det = engine.detect(_textured(1, (320, 240)))
    assert set(det.anomaly) == set(bundle.manifest.labels.anomalies)
    assert engine.explain(det).tokens is not None


def test_tensorrt_flavour_is_what_tensorrts_parser_and_fusions_want(
    calib_npz: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Symmetric s8 Q/DQ on Conv/Gemm/MatMul inputs and on the backbone's residual adds; every
    DequantizeLinear reads INT8 (no INT32 bias, which TensorRT's parser rejects); attention's
    activation products stay float; dec_step stays float for an FP16 build."""
    out = tmp_path / "trt-qdq.plan"
    # Where the Q/DQ go is checked here, not accuracy: a random-init encoder's proposal scores are
    # near ties, so INT8 noise picks other tokens and no small budget holds; the generous one
    # keeps the search from falling back to float.
    _quantize(tiny_bundle, calib_npz, out, "tensorrt", "--budget-hoi", "10")
    bundle = load_bundle(out)
    assert bundle.manifest.graphs["dec_step"].precision == "fp32"
    assert not [
        n for n in onnx.load_from_string(bundle.graph_bytes("dec_step")).graph.node if "Quantize" in n.op_type
    ]
    for name in ("hoi", "cap_encoder"):
        model = onnx.load_from_string(bundle.graph_bytes(name))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        consumers: dict[str, set[str]] = {}
        for node in model.graph.node:
            for inp in node.input:
                consumers.setdefault(inp, set()).add(node.op_type)
        producers = {o: n for n in model.graph.node for o in n.output}
        quantize_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert quantize_nodes, name
        assert not {n.op_type for n in model.graph.node} & {
            "SpaceToDepth",
            "MatMulIntegerToFloat",
        }  # CPU-only
        for node in quantize_nodes:
            zero_point = inits[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any()  # symmetric s8
        for node in model.graph.node:
            if node.op_type == "DequantizeLinear":
                source = node.input[0]
                dtype = inits[source].dtype if source in inits else None
                if source in producers:
                    assert producers[source].op_type == "QuantizeLinear", node.name  # an activation: s8
                else:
                    assert dtype == np.int8, f"{name}: {node.name} dequantizes {dtype}"  # never INT32 bias
                assert consumers[node.output[0]] & {"Conv", "Gemm", "MatMul", "Add"}, node.name
            dq_of_weight = {
                i for i in node.input if i in producers and producers[i].op_type == "DequantizeLinear"
                and producers[i].input[0] in inits
            }  # fmt: skip
            weights = [i in inits or i in dq_of_weight for i in node.input]
            weightless = node.op_type == "MatMul" and not any(weights)
            if weightless:  # attention's Q.K^T and A.V: float inputs
                assert all(producers[i].op_type != "DequantizeLinear" for i in node.input if i in producers)
        if name == "hoi":
            residual = [n for n in model.graph.node if n.op_type == "Add" and "/backbone/" in n.name]
            quantized = [
                n for n in residual
                if all(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input)
            ]  # fmt: skip
            assert residual and len(quantized) >= len(residual) // 2, (len(quantized), len(residual))
            outside = [n for n in model.graph.node if n.op_type == "Add" and "/backbone/" not in n.name]
            assert all(
                producers[i].op_type != "DequantizeLinear" for n in outside for i in n.input if i in producers
            )  # the transformer's residual stream stays float


def test_gate_refuses_a_bundle_calibrated_on_constant_frames(
    dataset: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    canvases = np.full((16, 192, 192, 3), 128, np.uint8)
    const = calib_set.CalibrationSet(canvases, ["grey"] * 16, 114, calib_set.frames_sha256(canvases))
    calib_set.save(const, tmp_path / "const.npz")
    broken = tmp_path / "broken.plan"
    # every graph whole, on ranges seen on grey frames only (a search could keep enough of hoi in
    # float to pass, as it did with 7-bit weights on an AVX2 CPU)
    _quantize(tiny_bundle, tmp_path / "const.npz", broken, "cpu", "--fixed-recipe")
    report = tmp_path / "report.json"
    result = run_cli(
        "h2a.calibration.cli", "report", "--fp32", str(tiny_bundle), "--int8", str(broken),
        "--data", str(dataset), "--json", str(report), "--quiet",
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "INT8 bundle refused" in last and "hoi output error" in last and "Tried: hoi:" in last
    assert not broken.exists() and broken.with_name("broken.plan.rejected").exists()
    assert json.loads(report.read_text())["passed"] is False


def test_gate_on_hand_made_reports() -> None:
    fp32 = {"anomaly_auc": 0.96, "anomaly_type_map": 0.93}
    ok = judge(fp32, {"anomaly_auc": 0.955, "anomaly_type_map": 0.92}, 0.95, Budget())
    assert ok.passed and ok.deltas["anomaly_auc"] == pytest.approx(-0.005)
    bad = judge(fp32, {"anomaly_auc": 0.94, "anomaly_type_map": 0.93}, 0.85, Budget(), {"hoi": (0.2, 0.1)})
    assert not bad.passed and len(bad.failures) == 3
    assert judge({"anomaly_auc": float("nan")}, {"anomaly_auc": float("nan")}, None, Budget()).passed is False
    assert token_agreement([[1, 2, 3], [4]], [[1, 2, 9], [4, 5]]) == pytest.approx(3 / 5)


def test_sensitivity_groups_follow_module_paths() -> None:
    assert group_of("/model/backbone/layer2/layer2.1/conv1/Conv") == "backbone.layer2"
    assert group_of("/model/inst_decoder/layers.0/cross_attn/MatMul") == "inst_decoder.layers.0"
    assert group_of("/MatMul_6") == "attention-products"


def test_legacy_calibrator_batches_and_cache_round_trip(calib_npz: Path, tmp_path: Path) -> None:
    calib = calib_set.load(calib_npz)
    feeder = CalibrationFeeder(calib, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], batch_size=5)
    batches = []
    while (batch := feeder.next_batch()) is not None:
        batches.append(batch)
    assert len(batches) == len(calib) // 5 and batches[0].shape == (5, 3, 192, 192)
    assert np.allclose(batches[0][0], (calib.canvases[0].transpose(2, 0, 1) / 255 - 0.5) / 0.25, atol=1e-5)
    key = CacheKey("hoi", "a" * 64, calib.sha256, "8.6.2.3", (8, 7))
    cache = CalibrationCache(tmp_path, key)
    assert cache.read() is None
    assert cache_name(key) == f"hoi.{'a' * 16}.{calib.sha256[:16]}.trt8.6.2.3.sm87.calib"
    table = b"TRT-8602-EntropyCalibration2\nimages: 3c010a14\n"
    cache.write(table)
    assert CalibrationCache(tmp_path, key).read() == table  # second build: no frames needed
    # anything the scales depend on changes: recalibrate rather than reuse them
    for changed in (
        dataclasses.replace(key, graph_sha256="b" * 64),  # a retrained model
        dataclasses.replace(key, calib_sha256="c" * 64),  # other frames
        dataclasses.replace(key, trt_version="8.6.1.6"),  # another TensorRT build
        dataclasses.replace(key, compute_capability=(8, 6)),  # another GPU family
    ):
        assert CalibrationCache(tmp_path, changed).read() is None


def test_folded_batch_norms_match_the_original_backbone() -> None:
    torch.manual_seed(0)
    net = ResNet((1, 1, 1, 1), width=8).eval()
    for m in net.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    images = torch.randn(2, 3, 64, 64)
    fused = fold_batch_norms(net)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(fused(images), net(images), rtol=1e-4, atol=1e-4)


def test_edge_bench_compares_int8_with_fp32(cpu_int8: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_cli(
        "h2a.edge.bench", "--engine", str(tiny_bundle), "--int8", str(cpu_int8), "--frames", "10",
        "--repeats", "2", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    int8 = json.loads(out.read_text())["int8"]
    for key in ("hoi", "dec_step", "anomalous_frame"):
        assert int8[key]["fp32_ms"] > 0 and int8[key]["int8_ms"] > 0
        assert int8[key]["speedup"] == pytest.approx(int8[key]["fp32_ms"] / int8[key]["int8_ms"])
    assert set(int8["precision"].values()) == {"int8"}
    assert "anomalous frame" in result.stdout


def test_hoi_spins_by_default_only_in_int8_bundles(cpu_int8: Path, tiny_bundle: Path) -> None:
    from h2a.runtime.engine import hoi_spins
    from h2a.runtime.errors import InputError

    int8, fp32 = load_bundle(cpu_int8), load_bundle(tiny_bundle)
    assert hoi_spins(int8, "auto") and not hoi_spins(fp32, "auto")
    assert hoi_spins(fp32, "on") and not hoi_spins(int8, "off")
    with pytest.raises(InputError, match="spin mode 'fast'"):
        hoi_spins(int8, "fast")


def test_tensorrt_build_refuses_a_cpu_int8_bundle(cpu_int8: Path, tmp_path: Path) -> None:
    result = run_cli(
        "h2a.export_tools.export.cli", "--backend", "tensorrt", "--onnx-bundle", str(cpu_int8),
        "--out", str(tmp_path / "trt.plan"),
    )  # fmt: skip
    assert result.returncode != 0
    assert "--target tensorrt" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "trt.plan").exists()


def test_bisection_keeps_the_fewest_worst_groups_in_float() -> None:
    from h2a.calibration.sensitivity import SearchClock, _bisect_float_groups

    order = [f"g{i}" for i in range(40)]  # worst first
    tried: list[int] = []

    def measure(kept: Sequence[str]) -> tuple[float, bytes]:
        tried.append(len(kept))
        return 0.5 / (1 + len(kept)), bytes(len(kept))  # error falls as groups go float

    error, _, kept = _bisect_float_groups(order, measure, 0.05, SearchClock(), lambda _: None)
    assert kept == order[:9] and error == pytest.approx(0.05)  # 0.5 / 10: the first that fits
    assert len(tried) <= 2 + 6  # all-but-one, then log2(39) bisection steps
    hopeless = _bisect_float_groups(order, lambda kept: (1.0, b""), 0.05, SearchClock(), lambda _: None)
    assert hopeless[0] == 1.0 and len(hopeless[2]) == 39  # more float did not help: given up at once
    spent = SearchClock(seconds=0.0)
    error, _, kept = _bisect_float_groups(order, measure, 0.05, spent, lambda _: None)
    assert len(kept) == 39 and error <= 0.05  # out of time: the known fit, not a guess


def test_fixed_recipe_quantizes_everything_whatever_the_error(
    calib_npz: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fixed.plan"
    _quantize(tiny_bundle, calib_npz, out, "cpu", "--fixed-recipe", "--budget-hoi", "0.0001")
    manifest = load_bundle(out).manifest
    assert manifest.provenance["calibration"]["search"] == "fixed"
    assert {n: g.precision for n, g in manifest.graphs.items()} == dict.fromkeys(manifest.graphs, "int8")
    hoi = manifest.provenance["calibration"]["graphs"]["hoi"]
    assert hoi["chosen"]["kept_float"] == [] and hoi["chosen"]["error"] > 0.0001


def test_edge_bench_fair_decoder_baseline_and_backends(tmp_path: Path) -> None:
    bundle, checkpoint, baseline = tmp_path / "b.plan", tmp_path / "b.pt", tmp_path / "no_cache.onnx"
    made = run_cli(
        "h2a.export_tools.export.cli", "--random-init", "--out", str(bundle), "--save-checkpoint",
        str(checkpoint), "--no-cache-decoder", str(baseline), "--quiet", "--no-check",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    out = tmp_path / "bench.json"
    result = run_cli(
        "h2a.edge.bench", "--engine", str(bundle), "--checkpoint", str(checkpoint), "--no-cache-decoder",
        str(baseline), "--backends", "--frames", "6", "--repeats", "2", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    n = r["no_cache_decoder"]
    assert n["tokens_agree"] == 1.0 and n["speedup"] == pytest.approx(n["no_cache_ms"] / n["kv_cache_ms"])
    assert r["torch"]["torch_eager_ms"] > 0
    rows = r["backends"]
    assert rows["onnxruntime fp32"]["hoi_speedup"] == 1.0
    if importlib.util.find_spec("openvino") is not None:
        assert {"openvino f32", "openvino bf16"} <= set(rows)
    assert "no-cache decoder" in result.stdout


def test_rewired_float_fallback_equals_float_and_the_full_quantization(
    calib_npz: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Keeping every quantized node float by rewiring gives the float graph back (Relus included);
    keeping the backbone float removes its Q/DQ and leaves the transformer's."""
    from h2a.calibration.qdq import RECIPES, GraphQuantizer
    from h2a.calibration.sensitivity import node_groups, output_error, session
    from h2a.calibration.traces import record_feeds
    from h2a.calibration.weight_store import StoredGraph, model_bytes

    bundle = load_bundle(tiny_bundle)
    cal, held = calib_set.load(calib_npz).split(4)
    engine = Engine(bundle)
    feeds, held_feeds = record_feeds(engine, cal, 2)["hoi"], record_feeds(engine, held, 2)["hoi"]
    # the tiny graph's weights held apart too (by default only large ones are: base-preset sizes)
    q = GraphQuantizer(bundle.graph_bytes("hoi"), "cpu", "minmax", tmp_path, "hoi", external_min_bytes=1024)
    q.compute_ranges(feeds)
    recipe = RECIPES["cpu"]["hoi"][0]
    reference = session(q.fp32_path.read_bytes())
    groups = node_groups(q.model, recipe.op_types)
    everything = [n for names in groups.values() for n in names]
    as_float = onnx.load_from_string(model_bytes(q.quantize(recipe, everything)))
    assert output_error(reference, session(as_float.SerializeToString()), held_feeds) < 1e-5
    assert not any(n.op_type == "QuantizeLinear" for n in as_float.graph.node)
    stored = q.quantize(recipe)
    assert isinstance(stored, StoredGraph)
    full = onnx.load_from_string(stored.materialize())
    held_apart = [t for t in full.graph.initializer if t.name in stored.external]
    assert len(held_apart) > 20 and len(stored.structure) < len(full.SerializeToString())
    assert not any(
        t.HasField("raw_data")
        for t in onnx.load_from_string(stored.structure).graph.initializer
        if t.name in stored.external
    )
    # the session given the weights from memory computes what the whole model computes
    apart, whole = session(stored), session(stored.materialize())
    for feed in held_feeds:
        for got, want in zip(apart.run(None, feed), whole.run(None, feed), strict=True):
            np.testing.assert_array_equal(got, want)
    backbone = [n for g, names in groups.items() if g.startswith("backbone") for n in names]
    part = onnx.load_from_string(model_bytes(q.quantize(recipe, backbone)))
    assert output_error(reference, session(part.SerializeToString()), held_feeds) > 1e-3

    def quantized_inputs(model: onnx.ModelProto, scope: str) -> int:
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        return sum(
            producers.get(i) == "DequantizeLinear"
            for n in model.graph.node
            if scope in n.name
            for i in n.input
        )

    assert quantized_inputs(full, "/backbone/") > 0 and quantized_inputs(part, "/backbone/") == 0
    assert quantized_inputs(part, "/encoder") == quantized_inputs(full, "/encoder") > 0


def test_refinement_keeps_only_the_fine_groups_the_budget_needs() -> None:
    from h2a.calibration.sensitivity import SearchClock, _refine, coarse_group

    assert coarse_group("encoder.0.self_attn") == "encoder.0"
    assert coarse_group("backbone.layer2") == coarse_group("backbone.conv1") == "backbone"
    assert coarse_group("inst_decoder.layers.3") == "inst_decoder"
    # in the boundary group only 'backbone.layer3' matters: float, it brings the error under budget
    harm = {"backbone.layer1": 0.01, "backbone.layer2": 0.02, "backbone.layer3": 0.3, "backbone.layer4": 0.05}

    def measure(kept: Sequence[str]) -> tuple[float, bytes]:
        quantized = [g for g in harm if g not in kept]
        return 0.02 + sum(harm[g] for g in quantized), b""

    boundary = list(harm)
    error, _, kept = _refine(
        ["encoder.0"],
        boundary,
        measure(["encoder.0", *boundary]),
        measure,
        0.12,
        SearchClock(),
        lambda _: None,
    )
    assert kept == ["encoder.0", "backbone.layer3"] and error == pytest.approx(0.10)


def test_cpu_int8_bundles_stay_on_onnxruntime(cpu_int8: Path) -> None:
    from h2a.runtime.engine import select_backend
    from h2a.runtime.errors import BackendError

    bundle = load_bundle(cpu_int8)
    assert select_backend(bundle, "auto") == "onnxruntime"
    with pytest.raises(BackendError, match=r"quantized for ONNX Runtime .* --target tensorrt"):
        select_backend(bundle, "openvino")


def test_ranges_from_the_optimised_calibration_session_equal_onnxruntimes_own(
    calib_npz: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    """compute_ranges augments the graph in linear time (`minmax_ranges.py`) and runs it with graph
    optimisations on; every tensor's min/max must equal what ONNX Runtime's own calibrator, with
    its own augmentation and unoptimised session, collects."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, load_tensors_data

    from h2a.calibration.qdq import CALIBRATED_OP_TYPES, GraphQuantizer, _Feeds
    from h2a.calibration.traces import record_feeds

    bundle = load_bundle(tiny_bundle)
    cal, _ = calib_set.load(calib_npz).split(4)
    feeds = record_feeds(Engine(bundle), cal, 2)["hoi"][:6]
    q = GraphQuantizer(bundle.graph_bytes("hoi"), "cpu", "minmax", tmp_path, "hoi")
    q.compute_ranges(feeds)
    ours = load_tensors_data(q.ranges_path)
    plain = create_calibrator(
        q.source_path,
        list(CALIBRATED_OP_TYPES),
        augmented_model_path=str(tmp_path / "plain.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"symmetric": False},
    )
    plain.collect_data(_Feeds(feeds, q.input_names))
    theirs = plain.compute_data()
    names = set(theirs.keys())
    assert set(ours.keys()) == names and len(names) > 20
    for name in names:
        got, want = np.asarray(ours[name].range_value), np.asarray(theirs[name].range_value)
        assert np.allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max() + 1)), name


def test_a_spent_time_budget_keeps_the_unsearched_graph_float_and_says_why(
    calib_npz: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    """No second of budget: every graph gets its whole-graph recipes only. `hoi`, whose error
    budget no whole recipe meets, stays FP32 and the bundle is still written (the user's own time
    limit, not a failed search); the summary and the manifest say the time budget ended it."""
    out = tmp_path / "hurried.plan"
    result = _run_quantize(
        tiny_bundle, calib_npz, out, "--target", "cpu", "--time-budget", "0", "--budget-hoi", "0.0001"
    )
    assert result.returncode == 0, result.stderr
    assert "FP32 (the time budget ended its search" in result.stdout
    manifest = load_bundle(out).manifest
    assert manifest.graphs["hoi"].precision == "fp32"
    calibration = manifest.provenance["calibration"]
    assert calibration["graphs"]["hoi"]["out_of_time"] is True
    assert calibration["time_budget_s"] == 0 and calibration["seconds"] > 0
    hoi_attempts = calibration["graphs"]["hoi"]["attempts"]
    assert hoi_attempts and all(a["kept_float"] == [] for a in hoi_attempts)  # whole-graph only


def test_in_memory_dynamic_quantization_equals_onnxruntimes_quantize_dynamic(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """The search's dynamic INT8 (no file round trip) gives ONNX Runtime's `quantize_dynamic`
    graph, node for node and weight for weight, with and without excluded nodes."""
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from h2a.calibration.dynamic_int8 import quantize_dynamic_model
    from h2a.calibration.qdq import quantizable_nodes

    bundle = load_bundle(tiny_bundle)
    for name in ("hoi", "dec_step"):
        source = tmp_path / f"{name}.onnx"
        source.write_bytes(bundle.graph_bytes(name))
        model = onnx.load(source)
        inits = {t.name for t in model.graph.initializer}
        linear = set(quantizable_nodes(model, ("Gemm", "MatMul")))
        weighted = [n.name for n in model.graph.node if n.name in linear and n.input[1] in inits]
        assert len(weighted) > 4
        for exclude in ([], weighted[1:4]):
            ours = quantize_dynamic_model(model, ("Gemm", "MatMul"), exclude)
            out = tmp_path / f"{name}.dynamic.onnx"
            quantize_dynamic(
                source, out, op_types_to_quantize=["Gemm", "MatMul"], per_channel=False,
                weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            )  # fmt: skip
            theirs = onnx.load(out)
            assert [(n.op_type, n.name, list(n.input), list(n.output)) for n in ours.graph.node] == [
                (n.op_type, n.name, list(n.input), list(n.output)) for n in theirs.graph.node
            ]
            integer = sum(n.op_type == "MatMulInteger" for n in ours.graph.node)
            assert integer == len(weighted) - len(exclude)
            weights = {t.name: numpy_helper.to_array(t) for t in theirs.graph.initializer}
            assert {t.name for t in ours.graph.initializer} == set(weights)
            for t in ours.graph.initializer:
                np.testing.assert_array_equal(numpy_helper.to_array(t), weights[t.name])


def test_openvino_target_runs_hoi_on_openvino_and_the_caption_graphs_on_onnxruntime(
    calib_npz: Path, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--target openvino`: `hoi` in symmetric s8 Q/DQ, timed on OpenVINO (its FP32 graph too);
    the caption graphs in ONNX Runtime's INT8 ops, marked so, timed and run on ONNX Runtime."""
    pytest.importorskip("openvino", reason="the [openvino] extra is not installed")
    from h2a.calibration import openvino_session
    from h2a.calibration.quantize_bundle import quantize_graphs
    from h2a.runtime.backends.onnxruntime_backend import OrtGraph
    from h2a.runtime.backends.openvino_backend import OvGraph
    from h2a.runtime.engine import BackendOptions, select_backend

    opened: list[int] = []

    class Counting(openvino_session.OvSession):
        def __init__(self, *args: Any) -> None:
            opened.append(1)
            super().__init__(*args)

    monkeypatch.setattr(openvino_session, "OvSession", Counting)
    q = quantize_graphs(
        load_bundle(tiny_bundle),
        calib_set.load(calib_npz),
        "openvino",
        "minmax",
        fixed=True,
        say=lambda _: None,
    )
    assert len(opened) == 2  # hoi's FP32 graph (timed) and its INT8 graph (measured, timed); no other
    assert q.manifest.graphs["hoi"].quantization == "static-qdq-s8s8-symmetric"

    out = tmp_path / "openvino.plan"
    _quantize(tiny_bundle, calib_npz, out, "openvino", "--fixed-recipe")
    bundle = load_bundle(out)
    graphs = bundle.manifest.graphs
    assert all(g.precision == "int8" for g in graphs.values())
    assert graphs["hoi"].runtime is None
    assert graphs["cap_encoder"].runtime == graphs["dec_step"].runtime == "onnxruntime"
    assert select_backend(bundle, "auto") == "openvino"
    mixed = Engine(bundle, options=BackendOptions("openvino", "f32"))
    assert mixed.graph_backends == {
        "hoi": "openvino",
        "cap_encoder": "onnxruntime",
        "dec_step": "onnxruntime",
    }
    assert isinstance(mixed.hoi, OvGraph)
    assert isinstance(mixed.cap_encoder, OrtGraph) and isinstance(mixed.decoder.step, OrtGraph)
    on_ort = Engine(bundle, options=BackendOptions("onnxruntime"))
    for seed in range(3):
        frame = np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        images = on_ort.preprocess(frame)[0]
        a, b = on_ort.hoi.run({"images": images}), mixed.hoi.run({"images": images})
        # the same INT8 graph on two INT8 runtimes (their anomaly logits differ more: OpenVINO's own
        # kernels and fusions, which is why the search measures hoi's error on OpenVINO)
        assert np.linalg.norm(a["image_tokens"] - b["image_tokens"]) < 0.05 * np.linalg.norm(
            a["image_tokens"]
        )
        det = on_ort.detect(frame)  # one detection, captioned by each: both caption on ONNX Runtime
        assert mixed.explain(det).tokens == on_ort.explain(det).tokens
    from tests.test_edge_run import write_video

    video = write_video(tmp_path / "clip.avi", 6)
    run = run_cli(
        "h2a.edge.run_cli", "--engine", str(out), "--source", str(video), "--dry-run",
        "--backend", "openvino", "--ov-cache", "off", timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    started = next(line for line in (run.stderr + run.stdout).splitlines() if "started" in line)
    assert "backend=openvino" in started
    assert "cap_encoder_backend=onnxruntime" in started and "dec_step_backend=onnxruntime" in started


def test_int8_that_is_not_faster_stays_fp32_and_the_summary_gives_both_timings(
    calib_npz: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    """No INT8 graph runs 1000x faster than FP32: each stays FP32, and the summary gives the fit's
    and FP32's latencies, timed alternately."""
    out = tmp_path / "same.plan"
    result = _run_quantize(
        tiny_bundle, calib_npz, out, "--target", "cpu", "--min-speedup", "1000", "--budget-hoi", "1"
    )
    assert result.returncode == 0, result.stderr
    graphs = load_bundle(out).manifest.graphs
    assert all(g.precision == "fp32" for g in graphs.values())
    lines = [line for line in result.stdout.splitlines() if "not 1000x faster" in line]
    assert len(lines) == 3 and all("timed alternately" in line for line in lines)
    searched = json.loads(zipfile.ZipFile(out).read("manifest.json"))["provenance"]["calibration"]["graphs"]
    assert all(g["not_faster"] and g["rejected_ms"] > 0 for g in searched.values())


def test_openvino_target_without_openvino_is_refused_before_any_work(
    calib_npz: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from h2a.calibration import quantize_bundle
    from h2a.calibration.calib_set import CalibrationError

    monkeypatch.setattr(quantize_bundle, "backend_available", lambda name: name != "openvino")
    monkeypatch.setattr(quantize_bundle, "record_feeds", lambda *a, **k: pytest.fail("recorded first"))
    with pytest.raises(
        CalibrationError, match=r"--target openvino measures hoi on OpenVINO, which is not installed"
    ):
        quantize_bundle.quantize_graphs(
            load_bundle(tiny_bundle), calib_set.load(calib_npz), "openvino", "minmax"
        )


def test_reduce_range_follows_the_cpus_vnni_flag(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    assert runtime_cpu_features.cpu_flags(cpuinfo) >= {"avx2", "avx512_vnni"}
    assert runtime_cpu_features.cpu_flags(tmp_path / "missing") == frozenset()
    avx2, vnni = frozenset({"avx2", "fma"}), frozenset({"avx2", "avx_vnni"})
    assert cpu_features.reduce_range("auto", avx2) and not cpu_features.reduce_range("auto", vnni)
    assert cpu_features.reduce_range("on", vnni) and not cpu_features.reduce_range("off", avx2)
    assert cpu_features.reduce_range("auto", frozenset())  # an unknown CPU gets the safe weights
    with pytest.raises(ValueError, match="--reduce-range"):
        cpu_features.reduce_range("maybe", avx2)


def _int8_weights(bundle: Path, graph: str) -> np.ndarray:
    model = onnx.load_from_string(load_bundle(bundle).graph_bytes(graph))
    weights = [
        onnx.numpy_helper.to_array(t).ravel()
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    assert weights, graph
    return np.concatenate(weights).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class WeightWidths:
    """The tiny bundle quantized three ways, shared by the tests of the weights' width."""

    seven: Path  # --target cpu --reduce-range on
    eight: Path  # --target cpu --reduce-range off
    trt: Path  # --target tensorrt --reduce-range on (which TensorRT's weights ignore)


@pytest.fixture(scope="module")
def widths(calib_npz: Path, tiny_bundle: Path) -> WeightWidths:
    folder = calib_npz.parent
    out = WeightWidths(folder / "seven.plan", folder / "eight.plan", folder / "trt.plan")
    _quantize(tiny_bundle, calib_npz, out.seven, "cpu", "--fixed-recipe", "--reduce-range", "on")
    _quantize(tiny_bundle, calib_npz, out.eight, "cpu", "--fixed-recipe", "--reduce-range", "off")
    _quantize(tiny_bundle, calib_npz, out.trt, "tensorrt", "--fixed-recipe", "--reduce-range", "on")
    return out


def test_reduce_range_writes_7_bit_weights_for_cpu_targets_only(widths: WeightWidths) -> None:
    """What keeps u8 x s8 pairs inside int16 on CPUs without VNNI: every s8 weight within +-64
    (2 x 255 x 64 < 32,767)."""
    seven, eight, trt = widths.seven, widths.eight, widths.trt
    for graph in ("hoi", "cap_encoder", "dec_step"):
        reduced, full = _int8_weights(seven, graph), _int8_weights(eight, graph)
        assert np.abs(reduced).max() <= 64, graph
        assert np.abs(full).max() > 64, graph
    assert load_bundle(seven).manifest.provenance["calibration"]["reduce_range"] is True
    assert load_bundle(eight).manifest.provenance["calibration"]["reduce_range"] is False
    # TensorRT's symmetric s8 graphs keep 8-bit weights whatever the flag says
    assert np.abs(_int8_weights(trt, "hoi")).max() > 64
    assert load_bundle(trt).manifest.provenance["calibration"]["reduce_range"] is False


def test_an_8_bit_int8_bundle_on_an_x86_cpu_without_vnni_is_warned_about(
    widths: WeightWidths, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The weights' width is chosen where the bundle is quantized; the box that runs it may differ."""
    seven, eight, trt = widths.seven, widths.eight, widths.trt
    avx2 = frozenset({"sse2", "avx2", "fma"})
    cases = [  # (bundle, this CPU's flags, warned)
        (eight, avx2, True),
        (trt, avx2, True),  # made for TensorRT, run here on ONNX Runtime
        (eight, avx2 | {"avx512_vnni"}, False),
        (eight, frozenset({"asimd", "asimddp"}), False),  # ARM: other kernels
        (seven, avx2, False),
        (tiny_bundle, avx2, False),  # FP32
    ]
    for bundle, flags, warned in cases:
        monkeypatch.setattr(runtime_cpu_features, "cpu_flags", lambda flags=flags: flags)
        caplog.clear()
        with caplog.at_level("WARNING", logger="h2a.runtime.engine"):
            Engine(load_bundle(bundle), threads=1)
        messages = [r.getMessage() for r in caplog.records if "VNNI" in r.getMessage()]
        assert bool(messages) == warned, (bundle.name, sorted(flags), messages)
        if warned and bundle == eight:
            assert "hoi, cap_encoder, dec_step" in messages[0] and "--reduce-range auto" in messages[0]
        # --reduce-range would not change a TensorRT bundle's weights: the advice is another target
        if warned and bundle == trt:
            assert "--target cpu or openvino" in messages[0] and "--reduce-range" not in messages[0]
