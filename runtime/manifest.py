"""The bundle manifest as typed, validated data.

The exporter builds a `Manifest` and serialises it with `to_json`; the runtime parses it back with
`Manifest.from_json`, which names the offending key when something is missing or of the wrong
type, so a hand-edited or foreign manifest is refused with a line a person can act on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from h2a.runtime.errors import BundleError
from h2a.runtime.schema import SchemaError, from_data

FORMAT = "h2a.plan"
FORMAT_VERSION = 2  # 2: dec_step takes one cache / cross K/V input per layer
BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class GraphEntry:
    member: str  # archive path of the graph file
    precision: str = field(metadata={"choices": PRECISIONS})
    format: str = "onnx"  # onnx | tensorrt-engine
    quantization: str | None = None  # e.g. "static-qdq-u8s8", "dynamic-s8"; None for float graphs
    accuracy_delta: dict[str, float] | None = None  # measured against FP32 on held-out data
    # the runtime this graph needs whatever the bundle runs on: "onnxruntime" for graphs quantized
    # into ONNX Runtime's own INT8 ops (edge-calibrate quantize --target cpu|openvino); None: any
    runtime: str | None = None


@dataclass(frozen=True)
class Labels:
    objects: list[str]  # instance classes without "no object"
    actions: list[str]
    anomalies: list[str]


@dataclass(frozen=True)
class Preprocess:
    input_size: int
    letterbox: bool
    pad_value: int
    mean: list[float]  # per RGB channel, on 0..1 pixels
    std: list[float]
    color: str  # "RGB": frames from OpenCV are BGR and get converted
    layout: str  # "NCHW"


@dataclass(frozen=True)
class HOIConstants:
    n_inst_queries: int
    n_int_queries: int
    n_image_tokens: int
    d_model: int


@dataclass(frozen=True)
class DecoderConstants:
    layers: int
    heads: int
    head_dim: int
    max_len: int  # cache length P, BOS included
    vocab_size: int
    max_tag_tokens: int
    n_memory: int
    bos_id: int
    eos_id: int
    pad_id: int
    no_repeat_ngram: int  # repetition guard; 0 turns it off


@dataclass(frozen=True)
class Thresholds:
    anomaly: dict[str, float]  # enter threshold per anomaly type
    hoi_score: float  # minimum triplet score kept by post-processing
    instance_score: float


@dataclass(frozen=True)
class Member:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    format: str
    format_version: int
    backend: str = field(metadata={"choices": BACKENDS})
    created: str
    tool_version: str
    graphs: dict[str, GraphEntry]
    tokenizer: str
    labels: Labels
    preprocess: Preprocess
    hoi: HOIConstants
    decoder: DecoderConstants
    thresholds: Thresholds
    provenance: dict[str, Any]
    members: dict[str, Member] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_json(text: str) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise BundleError(f"manifest.json is not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, dict):
            raise BundleError("manifest.json must hold a JSON object")
        if data.get("format") != FORMAT:
            raise BundleError(f"manifest.json: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"unknown bundle format version {version!r} (this runtime reads {FORMAT_VERSION}); "
                "re-export the bundle with the edge-export that matches this runtime"
            )
        try:
            manifest = from_data(Manifest, data, unknown="ignore")  # newer writers may add keys
        except SchemaError as err:
            raise BundleError(f"manifest.json: {err}") from None
        return manifest
