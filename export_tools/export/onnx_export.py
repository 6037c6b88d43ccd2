"""Export one graph to ONNX: opset 17, the TorchScript exporter (`dynamo=False`).

The dynamo exporter emits opset 18 whatever is asked, which the TensorRT of older JetPacks cannot
parse; the TorchScript exporter honours 17.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from h2a.runtime.graphs import GraphSpec

OPSET = 17


def fold_weight_identities(model: onnx.ModelProto) -> int:
    """A module called more than once (a box head shared by decoder layers) exports its weights
    once and each later use through an Identity node. Such a weight looks computed, so INT8
    tools would treat it as an activation; consumers read the initializer itself instead.
    Returns how many Identity nodes were removed."""
    initializers = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs
    }
    if not alias:
        return 0
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for k, name in enumerate(node.input):
            if name in alias:
                node.input[k] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(alias)


def export_onnx(
    module: nn.Module, example: tuple[torch.Tensor, ...], spec: GraphSpec, axes: dict[str, dict[int, str]]
) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes are expected here
        torch.onnx.export(
            module,
            example,
            buffer,  # type: ignore[arg-type]  # file-like objects are accepted
            dynamo=False,
            opset_version=OPSET,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buffer.getvalue())
    data = model.SerializeToString() if fold_weight_identities(model) else buffer.getvalue()
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset != OPSET:
        raise RuntimeError(f"{spec.name}: exporter wrote opset {opset}, expected {OPSET}")
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    if names_in != spec.input_names or names_out != spec.output_names:
        raise RuntimeError(f"{spec.name}: graph I/O {names_in} -> {names_out} does not match its spec")
    return data
