"""The bundle manifest as typed, validated data.

The exporter builds a `Manifest` and serialises it with `to_json`; the runtime parses it back with
`Manifest.from_json`, which names the offending key when something is missing or of the wrong
type, so a hand-edited or foreign manifest is refused with a line a person can act on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from h2a.runtime.errors import BundleError

FORMAT = "h2a.plan"
FORMAT_VERSION = 2  # 2: dec_step takes one cache / cross K/V input per layer
BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class GraphEntry:
    member: str  # archive path of the graph file
    precision: str  # fp32 | fp16 | int8
    format: str = "onnx"  # onnx | tensorrt-engine
    quantization: str | None = None  # e.g. "static-qdq-u8s8", "dynamic-s8"; None for float graphs
    accuracy_delta: dict[str, float] | None = None  # measured against FP32 on held-out data


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
    backend: str
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
        manifest = _build(Manifest, data, "")
        if manifest.backend not in BACKENDS:
            raise BundleError(f"manifest.json: 'backend' is {manifest.backend!r}, expected one of {BACKENDS}")
        for name, graph in manifest.graphs.items():
            if graph.precision not in PRECISIONS:
                raise BundleError(f"manifest.json: 'graphs.{name}.precision' is {graph.precision!r}")
        return manifest


_T = TypeVar("_T")
_NESTED: dict[str, type] = {
    "labels": Labels,
    "preprocess": Preprocess,
    "hoi": HOIConstants,
    "decoder": DecoderConstants,
    "thresholds": Thresholds,
}
_SCALARS: dict[str, type | tuple[type, ...]] = {"int": int, "str": str, "float": (int, float), "bool": bool}


def _build(cls: type[_T], data: Any, where: str) -> _T:
    """Construct dataclass `cls` from JSON `data`, checking keys and scalar types by name."""
    if not isinstance(data, dict):
        raise BundleError(f"manifest.json: {where.rstrip('.') or 'top level'} must be an object")
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        key = where + f.name
        if f.name not in data:
            if f.name == "members":
                continue
            raise BundleError(f"manifest.json: missing key '{key}'")
        value = data[f.name]
        type_name = str(f.type)
        if f.name in _NESTED and cls is Manifest:
            value = _build(_NESTED[f.name], value, key + ".")
        elif f.name == "graphs":
            value = {k: _build(GraphEntry, v, f"{key}.{k}.") for k, v in _as_dict(value, key).items()}
        elif f.name == "members":
            value = {k: _build(Member, v, f"{key}.{k}.") for k, v in _as_dict(value, key).items()}
        elif type_name in _SCALARS and (
            not isinstance(value, _SCALARS[type_name]) or (type_name != "bool" and isinstance(value, bool))
        ):
            raise BundleError(f"manifest.json: '{key}' must be {type_name}, got {type(value).__name__}")
        values[f.name] = value
    return cls(**values)


def _as_dict(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"manifest.json: '{key}' must be an object")
    return value
