"""One graph to INT8 with ONNX Runtime's quantization tools: static Q/DQ or dynamic.

Two flavours, because the two consumers want different graphs:
- `cpu`: u8 activations and s8 weights (ONNX Runtime's fast path on x86; s8s8 runs 3-4x slower);
- `tensorrt`: symmetric s8 for both (TensorRT ignores zero points and fuses Q/DQ into the
  following Conv/MatMul), with Q/DQ only on Conv/Gemm/MatMul inputs, never on residual adds.
Only Conv/Gemm/MatMul are quantized, and Gemm/MatMul outputs stay float: ONNX Runtime's default
list also quantizes Add/Mul/Softmax/Concat, which sends the transformer's residual stream through
uint8 and collapses accuracy (measured on a trained decoder: 11.2% logit error against 0.7%).

CPU graphs also get an INT8-friendly stem before calibration (`stem_rewrite`) and their linear
layers' bias adds folded into ONNX Runtime's MatMulIntegerToFloat (`bias_fusion`).

Ranges are computed once per graph (`compute_ranges`) and the static quantization runs once per
recipe; every variant the sensitivity search tries is that graph with some nodes rewired to float
(`float_fallback.py`), so trying a layer group costs a rewrite, not a calibration or quantization.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

from h2a.calibration.bias_fusion import fuse_matmul_bias
from h2a.calibration.calib_set import CalibrationError
from h2a.calibration.dynamic_int8 import quantize_dynamic_model
from h2a.calibration.float_fallback import QuantScope, keep_float
from h2a.calibration.minmax_ranges import LinearMinMaxCalibrater
from h2a.calibration.options import CALIBRATION_METHOD_NAMES, GRAPHS
from h2a.calibration.stem_rewrite import space_to_depth_stem
from h2a.calibration.traces import Feed
from h2a.calibration.weight_store import EXTERNAL_MIN_BYTES, GraphModel, WeightStore
from h2a.runtime.backends.onnxruntime_backend import session_options

T = TypeVar("T")

CALIBRATION_METHODS = dict(
    zip(
        CALIBRATION_METHOD_NAMES,
        (CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile),
        strict=True,
    )
)
#: Histogram settings: ONNX Runtime's defaults (128 bins) are too coarse for entropy calibration.
HISTOGRAM_BINS = 2048
PERCENTILE = 99.999
QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul")
#: Inside the CNN backbone only: with Relu, MaxPool and the residual Add quantized too, ONNX
#: Runtime runs Conv->Relu->Conv chains and the residual adds in INT8 instead of converting back
#: to float between them (measured: base hoi 2.13x -> 2.3-2.4x over FP32). Outside the backbone
#: these ops carry the transformer's residual stream and stay float.
CNN_OP_TYPES = ("Relu", "MaxPool", "Add")
CNN_SCOPE = "/backbone/"
CALIBRATED_OP_TYPES = QUANTIZED_OP_TYPES + CNN_OP_TYPES
CALIBRATION_CHUNK = 4
#: Ops whose outputs stay float. TensorRT wants Q/DQ only at the inputs of the ops it runs in
#: INT8 (it fuses the rest itself), so there every quantized op keeps a float output.
FLOAT_OUTPUT_OP_TYPES = {"cpu": ["Gemm", "MatMul"], "tensorrt": ["Conv", "Gemm", "MatMul", "Add"]}
#: TensorRT flavour, inside the backbone: Q/DQ on both inputs of each residual Add, so TensorRT can
#: fuse Conv + Add + ReLU with an INT8 output (its guide's explicit-quantization placement).
TENSORRT_CNN_OP_TYPES = ("Add",)


@dataclass(frozen=True)
class Recipe:
    """How one graph is quantized. `static_ops` get calibrated Q/DQ; `dynamic_ops` get weight-only
    s8 with activations quantized per call (fast for the transformer parts on CPU; never for Conv,
    whose ConvInteger kernel is 6-7x slower than FP32 here)."""

    name: str
    static_ops: tuple[str, ...] = ()
    dynamic_ops: tuple[str, ...] = ()
    cnn_ops: tuple[str, ...] = ()  # statically quantized only for nodes inside CNN_SCOPE
    # MatMuls of two activations (attention scores and mixing) stay float: INT8 where a weight is.
    # On the base HOI encoder this halves the static recipe's output error (0.095 -> 0.053) at no
    # cost in speed
    float_activation_products: bool = False

    @property
    def op_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.static_ops + self.cnn_ops + self.dynamic_ops))


#: What is tried per flavour (GRAPH_FLAVOURS) and graph; the search keeps the fastest recipe within budget.
RECIPES: dict[str, dict[str, list[Recipe]]] = {
    "cpu": {
        "hoi": [
            Recipe(
                "static-qdq-u8s8",
                static_ops=QUANTIZED_OP_TYPES,
                cnn_ops=CNN_OP_TYPES,
                float_activation_products=True,
            ),
            Recipe(
                "static-cnn-u8s8+dynamic-matmul",
                static_ops=("Conv",),
                cnn_ops=CNN_OP_TYPES,
                dynamic_ops=("Gemm", "MatMul"),
                float_activation_products=True,
            ),
        ],
        "cap_encoder": [
            Recipe("dynamic-s8", dynamic_ops=("Gemm", "MatMul"), float_activation_products=True),
            Recipe("static-qdq-u8s8", static_ops=("Gemm", "MatMul"), float_activation_products=True),
        ],
        "dec_step": [
            Recipe("dynamic-s8", dynamic_ops=("Gemm", "MatMul"), float_activation_products=True),
            Recipe("static-qdq-u8s8", static_ops=("Gemm", "MatMul"), float_activation_products=True),
        ],
    },
    # Attention's activation-activation MatMuls stay float (they double the error, see above), and
    # dec_step is not quantized at all: its M=1 GEMVs gain nothing from INT8 Tensor Cores, so
    # TensorRT builds it FP16 (as NVIDIA's Model Optimizer does).
    "tensorrt": {
        "hoi": [
            Recipe(
                "static-qdq-s8s8-symmetric",
                static_ops=QUANTIZED_OP_TYPES,
                cnn_ops=TENSORRT_CNN_OP_TYPES,
                float_activation_products=True,
            )
        ],
        "cap_encoder": [
            Recipe("static-qdq-s8s8-symmetric", static_ops=("Gemm", "MatMul"), float_activation_products=True)
        ],
        "dec_step": [],
    },
}


#: How each graph is quantized per `--target`: in the "cpu" flavour (u8 activations, s8 weights,
#: ONNX Runtime's own fused INT8 ops: the graph needs ONNX Runtime) or the "tensorrt" flavour
#: (symmetric s8 Q/DQ around standard ONNX ops). `openvino` mixes them per graph, each where it ran
#: fastest on this CPU (one `edge-bench --backends` run, base preset, fixed recipes): `hoi` in s8
#: Q/DQ, which OpenVINO's CPU plugin runs as INT8 (89.7 ms against 102.2 ms for ONNX Runtime's
#: u8s8), the caption graphs in the cpu flavour on ONNX Runtime (a decoder step 1.28 ms there
#: against 5.05 ms on OpenVINO).
GRAPH_FLAVOURS: dict[str, dict[str, str]] = {
    "cpu": dict.fromkeys(GRAPHS, "cpu"),
    "tensorrt": dict.fromkeys(GRAPHS, "tensorrt"),
    "openvino": {"hoi": "tensorrt", "cap_encoder": "cpu", "dec_step": "cpu"},
}
FLAVOURS = ("cpu", "tensorrt")


class _Feeds(CalibrationDataReader):
    def __init__(self, feeds: Sequence[Feed], names: set[str]) -> None:
        self._feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._feeds):
            return None
        self._i += 1
        return self._feeds[self._i - 1]

    def __len__(self) -> int:
        return len(self._feeds)


def inline_shared_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace `Identity(initializer)` nodes with a copy of the initializer.

    The torch exporter shares equal constants (e.g. the all-zero biases of freshly folded convs)
    and reaches the copies through Identity nodes; a Q/DQ bias behind an Identity stops ONNX
    Runtime from fusing DQ-Conv-Q into QLinearConv, leaving those convs in float.
    """
    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def activation_products(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose inputs are both computed (no weight): attention's Q.K^T and A.V."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)
    ]


def quantizable_nodes(model: onnx.ModelProto, op_types: Sequence[str]) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in op_types]


class GraphQuantizer:
    """Holds one FP32 graph, its calibration ranges and a work folder for the tools' files."""

    def __init__(
        self,
        model_bytes: bytes,
        flavour: str,
        method: str,
        workdir: Path,
        name: str = "graph",
        external_min_bytes: int = EXTERNAL_MIN_BYTES,
        reduce_range: bool = False,
    ) -> None:
        """`reduce_range`: 7-bit weights, for x86 CPUs without VNNI (`cpu_features.py`)."""
        if flavour not in FLAVOURS:
            raise CalibrationError(f"INT8 flavour {flavour!r}: expected one of {', '.join(FLAVOURS)}")
        if method not in CALIBRATION_METHODS:
            raise CalibrationError(f"--method {method!r}: expected one of {', '.join(CALIBRATION_METHODS)}")
        self.flavour, self.method, self.name = flavour, method, name
        self.reduce_range = reduce_range
        self.workdir = workdir
        self.model = inline_shared_initializers(onnx.load_from_string(model_bytes))
        self.fp32_path = workdir / f"{name}.fp32.onnx"  # the reference: the graph as exported
        onnx.save(self.model, self.fp32_path)
        # What gets calibrated and quantized: for the CPU, with an INT8-friendly stem.
        self.source_path = self.fp32_path
        if flavour == "cpu":
            source = onnx.ModelProto()
            source.CopyFrom(self.model)
            if space_to_depth_stem(source):
                self.source_path = workdir / f"{name}.source.onnx"
                onnx.save(source, self.source_path)
        self.input_names = {i.name for i in self.model.graph.input}
        self.ranges_path: Path | None = None
        self._source_model: onnx.ModelProto | None = None
        #: The large weights of the source and of each fully quantized graph, held once for all tries.
        self.weights = WeightStore(external_min_bytes)
        self._static_models: dict[str, onnx.ModelProto] = {}  # recipe name -> fully quantized graph

    def compute_ranges(self, feeds: Sequence[Feed]) -> None:
        """Run the calibrator once over `feeds` (the tensors feeding Conv/Gemm/MatMul)."""
        if not feeds:
            raise CalibrationError(f"{self.name}: no calibration inputs were recorded")
        options: dict[str, object] = {"symmetric": self.flavour == "tensorrt"}
        if self.method in ("entropy", "percentile"):
            options.update(num_bins=HISTOGRAM_BINS, percentile=PERCENTILE)
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            augmented = str(Path(tmp) / "augmented.onnx")
            if self.method == "minmax":  # ONNX Runtime's, with a linear-time graph augmentation
                calibrator = LinearMinMaxCalibrater(
                    self.source_path, list(CALIBRATED_OP_TYPES), augmented, symmetric=options["symmetric"]
                )
                calibrator.augment_graph()
            else:
                calibrator = create_calibrator(
                    self.source_path,
                    list(CALIBRATED_OP_TYPES),
                    augmented_model_path=augmented,
                    calibrate_method=CALIBRATION_METHODS[self.method],
                    extra_options=options,
                )
            # ONNX Runtime's calibrator runs its augmented graph with every graph optimisation off
            # (ORT_DISABLE_ALL); the tensors it observes are the same with them on, only computed
            # by fused kernels, and the base hoi's ranges took 54 s on 24 frames that way.
            calibrator.infer_session = ort.InferenceSession(
                calibrator.augmented_model_path,
                sess_options=session_options(0, False),
                providers=calibrator.execution_providers,
            )
            # The histogram calibrators hold every intermediate tensor of a chunk in memory
            # (ResNet-50 at 512 px: ~0.5 GB per frame), so they go in chunks. MinMax's graph outputs
            # only each tensor's min and max: all inputs in one call, as each call's merge is a
            # Python pass over every calibrated tensor (the decoder step's 948 inputs in chunks of
            # 4 made 237 of them).
            chunk = len(feeds) if self.method == "minmax" else CALIBRATION_CHUNK
            for start in range(0, len(feeds), chunk):
                calibrator.collect_data(_Feeds(feeds[start : start + chunk], self.input_names))
            ranges = calibrator.compute_data()
            del calibrator
        self.ranges_path = self.workdir / f"{self.name}.{self.method}.ranges.json"
        save_tensors_data(ranges, self.ranges_path)

    def quantize(self, recipe: Recipe, exclude: Sequence[str] = ()) -> GraphModel:
        """The graph quantized by `recipe`, leaving the nodes in `exclude` in float. The static
        part is quantized once per recipe; the nodes in `exclude` are then given their float
        inputs back by rewiring (`float_fallback.py`), which costs a copy, not a quantization."""
        model = None
        if recipe.static_ops:
            scope = QuantScope(
                frozenset(recipe.static_ops + recipe.cnn_ops),
                frozenset(FLOAT_OUTPUT_OP_TYPES[self.flavour]),
                frozenset(self._always_float(recipe)),
            )
            model = keep_float(self._static(recipe), self._source(), exclude, scope)
        if recipe.dynamic_ops:
            # quantize_dynamic renames the nodes it rewrites (Gemm -> <name>_MatMul); exclusion
            # works on the names it sees, which are the FP32 names for nodes not yet touched.
            model = _quiet(
                quantize_dynamic_model,
                self.weights.with_weights(model if model is not None else self._source()),
                recipe.dynamic_ops,
                [*exclude, *self._always_float(recipe)],
                self.reduce_range,
            )
        if model is None:
            raise ValueError(f"recipe {recipe.name!r} quantizes nothing")
        if self.flavour == "tensorrt":
            if recipe.cnn_ops:
                float_inputs_outside_scope(model, recipe.cnn_ops)
        else:
            fuse_matmul_bias(model)
        if recipe.dynamic_ops:  # its INT8 weights are new to this try: the whole model
            return model.SerializeToString()
        return self.weights.graph(model)

    def _always_float(self, recipe: Recipe) -> list[str]:
        """Nodes a recipe never quantizes: activation products, CNN-only ops outside the backbone."""
        exclude = list(activation_products(self.model)) if recipe.float_activation_products else []
        if recipe.cnn_ops:
            exclude += [
                n.name
                for n in self.model.graph.node
                if n.op_type in recipe.cnn_ops and CNN_SCOPE not in n.name
            ]
        return exclude

    def _source(self) -> onnx.ModelProto:
        if self._source_model is None:
            self._source_model = self.weights.take_weights(onnx.load(self.source_path))
        return self._source_model

    def _static(self, recipe: Recipe) -> onnx.ModelProto:
        """The graph with every node `recipe` quantizes statically in Q/DQ, made once per recipe."""
        if recipe.name in self._static_models:
            return self._static_models[recipe.name]
        if self.ranges_path is None:
            raise RuntimeError("compute_ranges must run before a static recipe")
        out = self.workdir / f"{self.name}.{recipe.name}.full.onnx"
        symmetric = self.flavour == "tensorrt"
        _quiet(
            quantize_static,
            self.source_path,
            out,
            None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.static_ops + recipe.cnn_ops),
            per_channel=True,
            reduce_range=self.reduce_range,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=self._always_float(recipe),
            calibrate_method=CALIBRATION_METHODS[self.method],
            calibration_cache_path=self.ranges_path,
            extra_options={
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": FLOAT_OUTPUT_OP_TYPES[self.flavour],
                # own Q/DQ per quantized consumer: a residual Add that reads the same tensor
                # as a Conv keeps reading the float tensor, not a DQ output
                "DedicatedQDQPair": symmetric,
                # TensorRT's parser takes INT8 (or FP8/INT4) into a DequantizeLinear, never the
                # INT32 biases ONNX Runtime would make: biases stay float there
                "QuantizeBias": not symmetric,
                # a Relu before a u8 Q would be dropped (the Q clips at zero anyway), but a node
                # kept float later (float_fallback.py) needs it back; ONNX Runtime's ReluQuantFusion
                # removes it again when the session is built
                "QDQKeepRemovableActivations": True,
            },
        )
        self._static_models[recipe.name] = self.weights.take_weights(onnx.load(out))
        return self._static_models[recipe.name]


def float_inputs_outside_scope(model: onnx.ModelProto, op_types: Sequence[str]) -> int:
    """Give `op_types` nodes outside CNN_SCOPE their float inputs back. ONNX Runtime's quantizer
    routes every consumer of a quantized tensor of an op type it was asked to quantize through the
    DequantizeLinear, excluded nodes too (seen: the transformer's `x + pos` adds reading a
    LayerNorm output that a Gemm quantizes). Q/DQ pairs left without consumers are removed.
    -> inputs rewired."""
    producers = {o: n for n in model.graph.node for o in n.output}
    rewired = 0
    for node in model.graph.node:
        if node.op_type not in op_types or CNN_SCOPE in node.name:
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
                rewired += 1
    while True:  # drop Q/DQ nodes nothing reads any more
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [
            n
            for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in used
        ]
        if not dead:
            return rewired
        for n in dead:
            model.graph.node.remove(n)


def _quiet(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """ONNX Runtime's tools log a hint per call (pre-processing, "already quantized?"); our
    progress output says more."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return fn(*args, **kwargs)
    finally:
        root.setLevel(level)
