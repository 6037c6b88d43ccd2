"""Keep chosen nodes of a Q/DQ graph in float by rewiring, instead of quantizing again.

The sensitivity search tries dozens of variants of one graph that differ only in which layer
groups stay float. Re-running ONNX Runtime's `quantize_static` for each costs 12-24 s on the base
`hoi` graph (its per-channel weight quantization and input rewiring are Python loops over the
whole graph), so ranking 70 groups took over ten minutes. The fully quantized graph already holds
everything a variant needs:

- a node kept float reads its weight's float original instead of the INT8 initializer behind a
  DequantizeLinear, and the float tensor behind its activation's QuantizeLinear/DequantizeLinear;
- an activation's Q/DQ pair exists because its producer writes a quantized output or some
  consumer reads a quantized input (ONNX Runtime's rule). When neither holds any more, every
  consumer reads the float tensor again, as if the quantizer had never seen the nodes kept float.

Q/DQ nodes and INT8 initializers nothing reads any more are dropped.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import onnx

QUANTIZED_SUFFIX = "_quantized"  # ONNX Runtime's name for a quantized initializer
FLOAT_SUFFIX = "_float"  # a restored float weight whose own name a DequantizeLinear output took


@dataclass(frozen=True)
class QuantScope:
    """What the full Q/DQ graph was quantized with: which op types, which of them keep float
    outputs, and which nodes the recipe leaves float anyway."""

    op_types: frozenset[str]
    float_output_types: frozenset[str]
    always_float: frozenset[str]


def keep_float(
    qdq: onnx.ModelProto, source: onnx.ModelProto, nodes: Collection[str], scope: QuantScope
) -> onnx.ModelProto:
    """A copy of `qdq` in which the nodes named `nodes` compute in float; `source` is the float
    graph `qdq` was quantized from (for the original weights)."""
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    if not nodes:
        return model
    kept = set(nodes)
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def quantized(n: onnx.NodeProto) -> bool:
        return n.op_type in scope.op_types and n.name not in kept and n.name not in scope.always_float

    # every value name the graph defines: a restored weight must not clash with one (ONNX Runtime
    # names a bias's DequantizeLinear output after the float bias it replaces)
    defined = {i.name for i in graph.initializer} | set(producers) | {i.name for i in graph.input}
    graph_outputs = {o.name for o in graph.output}
    originals = {i.name: i for i in source.graph.initializer}
    restore: dict[str, str] = {}  # name in the model -> original initializer
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        readers = consumers.get(dq.output[0], [])
        behind = dq.input[0]
        q = producers.get(behind)
        if q is not None and q.op_type == "QuantizeLinear":  # an activation's pair
            tensor = q.input[0]
            writer = producers.get(tensor)
            still = (
                writer is not None and quantized(writer) and writer.op_type not in scope.float_output_types
            ) or any(quantized(r) for r in readers)
            for reader in readers if not still else [r for r in readers if r.name in kept]:
                _rewire(reader, dq.output[0], tensor)
            if not still and dq.output[0] in graph_outputs:  # the graph's output keeps its name
                dq.op_type, dq.domain = "Identity", ""
                del dq.input[:]
                del dq.attribute[:]
                dq.input.append(tensor)
        elif (original := _original(behind, originals)) is not None:  # a weight or bias
            name = original if original not in defined else f"{original}{FLOAT_SUFFIX}"
            for reader in [r for r in readers if r.name in kept]:
                _rewire(reader, dq.output[0], name)
                restore[name] = original
    for name, original in sorted(restore.items()):
        tensor = onnx.TensorProto()
        tensor.CopyFrom(originals[original])
        tensor.name = name
        graph.initializer.append(tensor)
    drop_unused(model)
    return model


def _original(quantized_name: str, originals: Collection[str]) -> str | None:
    """The float initializer behind `X_quantized`. A bias shared by nodes with different input
    scales is quantized once per node, as `X0_quantized`, `X1_quantized`, ..."""
    if not quantized_name.endswith(QUANTIZED_SUFFIX):
        return None
    name = quantized_name[: -len(QUANTIZED_SUFFIX)]
    if name in originals:
        return name
    stem = name.rstrip("0123456789")
    return stem if stem != name and stem in originals else None


def _rewire(node: onnx.NodeProto, old: str, new: str) -> None:
    for k, name in enumerate(node.input):
        if name == old:
            node.input[k] = new


def drop_unused(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads, then initializers nothing reads."""
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        dead = [
            n
            for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in used
        ]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    if len(kept) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
