"""The CPU graph rewrites of INT8 calibration, on hand-built ONNX graphs run by ONNX Runtime:
bias folding into MatMulIntegerToFloat and the space-to-depth stem."""

from __future__ import annotations

import numpy as np
import onnx
import pytest


def _linear_qdq_graph() -> onnx.ModelProto:
    """x -> Q/DQ -> MatMul(DQ(W)) -> Add(bias) -> Relu, and a second MatMul whose Add reads an
    activation (not a bias: must stay as it is)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (8, 6)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(rng.uniform(0.001, 0.01, 6).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(6, np.int8), "w_zp"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=1),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["mm"], name="linear"),
        helper.make_node("Add", ["bias", "mm"], ["biased"]),
        helper.make_node("Relu", ["biased"], ["y"]),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["mm2"], name="not_a_linear"),
        helper.make_node("Add", ["mm2", "y"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 6]) for n in ("y", "z")],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_bias_fusion_folds_only_linear_biases_and_keeps_the_outputs() -> None:
    import onnxruntime as ort

    from h2a.calibration.bias_fusion import fuse_matmul_bias

    plain = _linear_qdq_graph()
    fused = onnx.ModelProto()
    fused.CopyFrom(plain)
    assert fuse_matmul_bias(fused) == 1
    onnx.checker.check_model(fused)
    kinds = [n.op_type for n in fused.graph.node]
    assert kinds.count("MatMulIntegerToFloat") == 1 and kinds.count("MatMul") == 1 and kinds.count("Add") == 1
    node = next(n for n in fused.graph.node if n.op_type == "MatMulIntegerToFloat")
    assert node.input[-1] == "bias" and node.output[0] == "biased"
    x = {"x": np.random.default_rng(1).standard_normal((2, 3, 8)).astype(np.float32)}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no ORT fusions
    want = ort.InferenceSession(plain.SerializeToString(), options).run(None, x)
    got = ort.InferenceSession(fused.SerializeToString(), options).run(None, x)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kernel", "pad", "side"), [(7, 3, 32), (3, 1, 30), (4, 1, 16)])
def test_space_to_depth_stem_equals_the_strided_convolution(kernel: int, pad: int, side: int) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from h2a.calibration.stem_rewrite import space_to_depth_stem

    rng = np.random.default_rng(kernel)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, kernel, kernel)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["c"], name="stem", strides=[2, 2], pads=[pad] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node(
            "Conv", ["r", "w2"], ["y"], name="next", strides=[2, 2], pads=[1] * 4
        ),  # not on an input
    ]
    graph = helper.make_graph(
        nodes,
        "stem",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    plain = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(plain)
    assert space_to_depth_stem(rewritten) == ["stem"]
    stem = next(n for n in rewritten.graph.node if n.name == "stem")
    assert list(next(a for a in stem.attribute if a.name == "strides").ints) == [1, 1]
    x = {"images": rng.standard_normal((2, 3, side, side)).astype(np.float32)}
    want = ort.InferenceSession(plain.SerializeToString()).run(None, x)[0]
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, x)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_space_to_depth_stem_leaves_other_convolutions_alone() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from h2a.calibration.stem_rewrite import space_to_depth_stem

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    for attrs in ({"strides": [1, 1], "pads": [1] * 4}, {"strides": [2, 2], "pads": [1, 1, 0, 0]}):
        conv = helper.make_node("Conv", ["images", "w"], ["y"], name="c", **attrs)  # type: ignore[arg-type]
        graph = helper.make_graph(
            [conv],
            "g",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [w],
        )
        model = helper.make_model(graph)
        assert space_to_depth_stem(model) == [] and len(model.graph.node) == 1
