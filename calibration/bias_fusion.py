"""CPU Q/DQ graphs: one MatMulIntegerToFloat per linear layer, bias included.

ONNX Runtime turns `DQ(x_q) -> MatMul <- DQ(W_q)` into its MatMulIntegerToFloat kernel, but leaves
the layer's bias `Add` behind as a separate op: one more pass over the activations per linear
layer, ~150 of them in the base HOI encoder, ~30 per decoder step. The kernel takes the bias as
an input and adds it while it scales the int32 accumulators, so this pass writes the contrib op
directly with its bias. Only for the `cpu` target: the graph then needs ONNX Runtime (TensorRT
gets the plain Q/DQ graph).

Matched: MatMul whose inputs are both DequantizeLinear (activation: per-tensor u8; weight: an s8
initializer, per-tensor or per-column), whose output feeds exactly one Add with a constant 1-D
bias of the output width. Anything else is left as it was.
"""

from __future__ import annotations

import math
from collections import defaultdict

import onnx
from onnx import helper

CONTRIB_DOMAIN = "com.microsoft"


def fuse_matmul_bias(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place; returns the number of linear layers fused."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}

    replace: dict[int, onnx.NodeProto] = {}  # id(MatMul node) -> fused node
    drop: set[int] = set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.output[0] in graph_outputs:
            continue
        a_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        users = consumers[node.output[0]]
        if not (_is_dq(a_dq) and _is_dq(w_dq) and len(users) == 1 and users[0].op_type == "Add"):
            continue
        assert a_dq is not None and w_dq is not None
        add = users[0]
        bias = next((i for i in add.input if i != node.output[0]), None)
        weight = inits.get(w_dq.input[0])
        if bias is None or bias not in inits or weight is None or len(weight.dims) != 2:
            continue
        width = weight.dims[1]
        if list(inits[bias].dims) != [width]:
            continue
        if not (_per_tensor(inits, a_dq) and _per_column(inits, w_dq, width)):
            continue
        fused = helper.make_node(
            "MatMulIntegerToFloat",
            [a_dq.input[0], w_dq.input[0], a_dq.input[1], w_dq.input[1], a_dq.input[2], w_dq.input[2], bias],
            [add.output[0]],
            name=node.name,
            domain=CONTRIB_DOMAIN,
        )
        replace[id(node)] = fused
        drop.add(id(add))
    if not replace:
        return 0
    kept = []
    for node in graph.node:
        if id(node) in drop:
            continue
        kept.append(replace.get(id(node), node))
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_dequantize(graph)
    if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return len(replace)


def _is_dq(node: onnx.NodeProto | None) -> bool:
    return node is not None and node.op_type == "DequantizeLinear" and len(node.input) == 3


def _size(tensor: onnx.TensorProto) -> int:
    """Element count from the shape alone (the values may be held outside: weight_store.py)."""
    return math.prod(tensor.dims)


def _per_tensor(inits: dict[str, onnx.TensorProto], dq: onnx.NodeProto) -> bool:
    scale = inits.get(dq.input[1])
    return scale is not None and _size(scale) == 1


def _per_column(inits: dict[str, onnx.TensorProto], dq: onnx.NodeProto, width: int) -> bool:
    """A weight DQ the kernel can take: one scale, or one per output column (axis 1)."""
    scale = inits.get(dq.input[1])
    if scale is None:
        return False
    size = _size(scale)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    return size == 1 or (size == width and axis in (1, -1))


def _drop_unused_dequantize(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if not (n.op_type == "DequantizeLinear" and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)
