"""ONNX Runtime's dynamic INT8 quantization, on a model in memory.

`onnxruntime.quantization.quantize_dynamic` reads a file, writes the model out again with external
data for shape inference, reads it back, and finally writes its result to a file that the caller
has to load. On the base `hoi` that round trip was ~2.5 s of a 3.1 s call, and the search calls it
once per try of a recipe with dynamic MatMuls (5.3 s per try in all, against 0.3 s for a static
recipe's rewiring). This runs the same steps (opset update, ONNX Runtime's own `ONNXQuantizer` in
integer-ops mode with quantize_dynamic's default options, which infers the shapes it needs) in
memory; `tests/test_calibration.py` checks that the result equals `quantize_dynamic`'s, node for
node and weight for weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnxruntime.quantization import QuantizationMode, QuantType
from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
from onnxruntime.quantization.quant_utils import add_infer_metadata
from onnxruntime.quantization.quantize import update_opset_version

WEIGHT_TYPE = QuantType.QInt8
ACTIVATION_TYPE = QuantType.QUInt8  # the only type ONNX Runtime's dynamic activations take


def quantize_dynamic_model(
    model: onnx.ModelProto, op_types: Sequence[str], exclude: Sequence[str] = (), reduce_range: bool = False
) -> onnx.ModelProto:
    """`model` (weights inside; left unchanged) with the `op_types` nodes not in `exclude` in
    dynamic INT8: s8 per-tensor weights (7-bit with `reduce_range`), u8 activations quantized at
    run time."""
    # Not shape-inferred here: in integer-ops mode ONNXQuantizer infers shapes itself after turning
    # Gemms into MatMuls and keeps only that result, so quantize_dynamic's first inference only
    # costs time (~1 s on the base hoi). The metadata tells its base class not to infer a third time.
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    add_infer_metadata(marked)
    marked = update_opset_version(marked, WEIGHT_TYPE)
    quantizer = ONNXQuantizer(
        marked,
        False,  # per_channel
        reduce_range,
        QuantizationMode.IntegerOps,
        False,  # static
        WEIGHT_TYPE,
        ACTIVATION_TYPE,
        None,  # tensors_range: none, the activations' ranges are computed at run time
        [],  # nodes_to_quantize: all of op_types
        list(exclude),
        list(op_types),
        {"MatMulConstBOnly": True},  # quantize_dynamic's default: MatMuls with a constant weight
    )
    quantizer.quantize_model()
    quantizer.model.topological_sort()  # as its save_model_to_file does before writing
    quantized: onnx.ModelProto = quantizer.model.model
    return quantized
