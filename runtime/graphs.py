"""The three graphs of a plan bundle: names, dtypes and shapes of every input and output.

This is the single place the graph contract is written down: the exporter names its inputs and
outputs from it, the runtime checks every graph it loads against it (`check_graph`: names, dtypes,
and each size the bundle's manifest fixes), and `python -m h2a.runtime.graphs` prints it as the
table in README.md. Symbolic dimensions:

B batch · S input image side · T image tokens ((S/32)^2) · D HOI width · N instance queries ·
C object classes + "no object" · Q interaction queries · A actions · K anomaly types ·
G tag tokens (padded) · M fused memory (T + G) · L decoder layers · H heads · dh head width ·
P max decoder positions (cache length) · V vocabulary
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from h2a.runtime.errors import BundleError

if TYPE_CHECKING:
    from h2a.runtime.manifest import Manifest


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[str | int, ...]
    doc: str


@dataclass(frozen=True)
class GraphSpec:
    name: str
    doc: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


F32, I64 = "float32", "int64"

HOI = GraphSpec(
    "hoi",
    "image -> instances, interactions with HOI pointers, anomaly logits, image tokens",
    inputs=(TensorSpec("images", F32, ("B", 3, "S", "S"), "letterboxed RGB, normalised, NCHW"),),
    outputs=(
        TensorSpec("boxes", F32, ("B", "N", 4), "cx, cy, w, h in [0, 1] of the letterboxed image"),
        TensorSpec("obj_logits", F32, ("B", "N", "C"), "instance class logits; last = no object"),
        TensorSpec("act_logits", F32, ("B", "Q", "A"), "multi-label action logits (sigmoid)"),
        TensorSpec("sub_ptr", F32, ("B", "Q", "N"), "subject pointer logits over instances"),
        TensorSpec("obj_ptr", F32, ("B", "Q", "N"), "object pointer logits over instances"),
        TensorSpec("anomaly_logits", F32, ("B", "K"), "image-level anomaly logits (sigmoid)"),
        TensorSpec("image_tokens", F32, ("B", "T", "D"), "encoder memory, input of cap_encoder"),
    ),
)

CAP_ENCODER = GraphSpec(
    "cap_encoder",
    "image tokens + HOI tag tokens -> fused memory and every decoder layer's cross K/V (once per caption)",
    inputs=(
        TensorSpec("image_tokens", F32, ("B", "T", "D"), "from hoi"),
        TensorSpec("tag_ids", I64, ("B", "G"), "word ids of the triplets' tags, padded"),
        TensorSpec("tag_mask", F32, ("B", "G"), "1 = tag token, 0 = padding"),
        TensorSpec("tag_boxes", F32, ("B", "G", 8), "subject then object box (cx, cy, w, h) per tag token"),
    ),
    outputs=(
        TensorSpec("memory", F32, ("B", "M", "Dc"), "fused tokens"),
        TensorSpec("cross_k", F32, ("L", "B", "H", "M", "dh"), "cross-attention keys per decoder layer"),
        TensorSpec("cross_v", F32, ("L", "B", "H", "M", "dh"), "cross-attention values per decoder layer"),
        TensorSpec("memory_bias", F32, ("B", "M"), "additive attention bias: 0 keep, large negative pad"),
    ),
)


def dec_step_spec(layers: int | None = None) -> GraphSpec:
    """The step graph of an `L`-layer decoder. Caches and cross K/V come as one input per layer
    (`self_k_0` ...): the runtime passes views of one (L, ...) buffer, and the graph never copies
    a cache (slicing one stacked input per layer cost ~15% of a step). `layers=None` gives the
    documentation form, with `<l>` for the layer index."""
    per_layer = [str(i) for i in range(layers)] if layers is not None else ["<l>"]

    def each(stem: str, shape: tuple[str | int, ...], doc: str) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(f"{stem}_{i}", F32, shape, doc) for i in per_layer)

    return GraphSpec(
        "dec_step",
        "one token + its position + the preallocated cache -> next-token logits and this step's K/V",
        inputs=(
            TensorSpec("token", I64, ("B", 1), "the previous token"),
            TensorSpec("position", I64, (1,), "its position = number of cached tokens (valid length)"),
            *each(
                "self_k",
                ("B", "H", "P", "dh"),
                "layer l's self-attention key cache; rows >= position ignored",
            ),
            *each("self_v", ("B", "H", "P", "dh"), "layer l's self-attention value cache"),
            *each(
                "cross_k", ("B", "H", "M", "dh"), "layer l's cross-attention keys (cap_encoder's cross_k[l])"
            ),
            *each("cross_v", ("B", "H", "M", "dh"), "layer l's cross-attention values"),
            TensorSpec("memory_bias", F32, ("B", "M"), "from cap_encoder"),
        ),
        outputs=(
            TensorSpec("logits", F32, ("B", "V"), "next-token logits"),
            TensorSpec(
                "new_k", F32, ("L", "B", "H", 1, "dh"), "this step's keys; the caller writes them at position"
            ),
            TensorSpec("new_v", F32, ("L", "B", "H", 1, "dh"), "this step's values"),
        ),
    )


DEC_STEP = dec_step_spec()

GRAPHS: dict[str, GraphSpec] = {g.name: g for g in (HOI, CAP_ENCODER, DEC_STEP)}


def graph_spec(name: str, decoder_layers: int) -> GraphSpec:
    """The exact spec of one graph of a model with `decoder_layers` decoder layers."""
    return dec_step_spec(decoder_layers) if name == "dec_step" else GRAPHS[name]


@dataclass(frozen=True)
class TensorInfo:
    """What a loaded graph says of one of its tensors; None marks a size decided at run time."""

    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int | None, ...]


def contract_sizes(manifest: Manifest) -> dict[str, int]:
    """The value of each symbolic size for this bundle (B stays free)."""
    m, d = manifest, manifest.decoder
    return {
        "S": m.preprocess.input_size,
        "N": m.hoi.n_inst_queries,
        "C": len(m.labels.objects) + 1,
        "Q": m.hoi.n_int_queries,
        "A": len(m.labels.actions),
        "K": len(m.labels.anomalies),
        "T": m.hoi.n_image_tokens,
        "D": m.hoi.d_model,
        "G": d.max_tag_tokens,
        "M": d.n_memory,
        "L": d.layers,
        "H": d.heads,
        "dh": d.head_dim,
        "Dc": d.heads * d.head_dim,
        "P": d.max_len,
        "V": d.vocab_size,
    }


def _shape_text(shape: tuple[str | int | None, ...]) -> str:
    return "(" + ", ".join("?" if v is None else str(v) for v in shape) + ")"


def check_graph(
    spec: GraphSpec, inputs: list[TensorInfo], outputs: list[TensorInfo], sizes: dict[str, int]
) -> None:
    """Refuse a graph whose inputs or outputs differ from the contract in name, dtype, rank or a
    size the manifest fixes. A size the graph leaves open is accepted (ONNX Runtime reports
    some output sizes only at run time)."""
    for direction, expected, found in (("input", spec.inputs, inputs), ("output", spec.outputs, outputs)):
        have = {t.name: t for t in found}
        missing = [t.name for t in expected if t.name not in have]
        extra = sorted(set(have) - {t.name for t in expected})
        if missing or extra:
            raise BundleError(
                f"graph {spec.name!r} does not match this runtime's contract: "
                + (
                    f"{direction} {missing[0]!r} is missing"
                    if missing
                    else f"unexpected {direction} {extra[0]!r}"
                )
                + "; re-export the bundle with the matching edge-export"
            )
        for want in expected:
            got = have[want.name]
            wanted = tuple(sizes.get(v) if isinstance(v, str) else v for v in want.shape)
            fits = len(got.shape) == len(wanted) and all(
                w is None or g is None or w == g for w, g in zip(wanted, got.shape, strict=True)
            )
            if got.dtype != want.dtype or not fits:
                raise BundleError(
                    f"graph {spec.name!r} {direction} {want.name!r} is {got.dtype} {_shape_text(got.shape)}, "
                    f"the contract and manifest say {want.dtype} {_shape_text(wanted)}; "
                    "re-export the bundle with the matching edge-export"
                )


def markdown_table() -> str:
    rows = ["| graph | direction | name | dtype | shape | meaning |", "|---|---|---|---|---|---|"]
    for graph in GRAPHS.values():
        for direction, tensors in (("in", graph.inputs), ("out", graph.outputs)):
            for t in tensors:
                shape = "(" + ", ".join(str(d) for d in t.shape) + ")"
                rows.append(f"| `{graph.name}` | {direction} | `{t.name}` | {t.dtype} | {shape} | {t.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
