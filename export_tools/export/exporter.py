"""From a checkpoint to a checked plan bundle: export three graphs, prove parity, write the file."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from h2a.export_tools.checkpoint import Checkpoint, weights_sha256
from h2a.export_tools.export.graphs import dynamic_axes, graph_module, random_inputs
from h2a.export_tools.export.onnx_export import OPSET, export_onnx
from h2a.export_tools.export.parity import ParityReport, check_parity
from h2a.export_tools.taxonomy import DEFAULT_HOI_SCORE, DEFAULT_INSTANCE_SCORE, DEFAULT_THRESHOLDS
from h2a.export_tools.tokenizer_build import SPECIAL_TOKENS
from h2a.runtime import preprocess
from h2a.runtime.graphs import GRAPHS, graph_spec
from h2a.runtime.manifest import (
    FORMAT,
    FORMAT_VERSION,
    DecoderConstants,
    GraphEntry,
    HOIConstants,
    Labels,
    Manifest,
    Preprocess,
    Thresholds,
)
from h2a.runtime.tokenizer import CaptionTokenizer

TOOL_VERSION = "0.1.0"
TOKENIZER_MEMBER = "tokenizer.json"
#: Repetition guard: no 20-gram may repeat. The caption format legitimately repeats phrases of up to
#: ~15 tokens ("What" inside "Total Caption", "in the middle of the image"), so small n breaks it.
NO_REPEAT_NGRAM = 20


class ParityError(RuntimeError):
    pass


@dataclass
class ExportResult:
    manifest: Manifest
    parity: ParityReport | None
    graph_sizes: dict[str, int]


def export_graphs(ckpt: Checkpoint, progress: bool = True) -> dict[str, bytes]:
    graphs: dict[str, bytes] = {}
    generator = torch.Generator().manual_seed(0)
    for name in tqdm(GRAPHS, desc="export ONNX", unit="graph", disable=not progress):
        spec = graph_spec(name, ckpt.config.caption.dec_layers)
        module = graph_module(spec, ckpt.hoi, ckpt.caption)
        example = random_inputs(spec, ckpt.hoi, ckpt.caption, 1, generator)
        graphs[name] = export_onnx(module, example, spec, dynamic_axes(spec))
    return graphs


def decoder_constants(ckpt: Checkpoint, tokenizer: CaptionTokenizer) -> DecoderConstants:
    c = ckpt.config.caption
    if tokenizer.vocab_size != c.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the decoder expects {c.vocab_size}"
        )
    pad, _, bos, eos = (tokenizer.token_id(t) for t in SPECIAL_TOKENS)
    return DecoderConstants(
        layers=c.dec_layers,
        heads=c.n_heads,
        head_dim=c.head_dim,
        max_len=c.max_len,
        vocab_size=c.vocab_size,
        max_tag_tokens=c.max_tag_tokens,
        n_memory=c.n_memory,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        no_repeat_ngram=NO_REPEAT_NGRAM,
    )


def build_manifest(
    ckpt: Checkpoint,
    consts: DecoderConstants,
    labels: Labels,
    graph_members: dict[str, str],
    provenance: dict[str, Any],
) -> Manifest:
    h = ckpt.config.hoi
    return Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        backend="onnxruntime",
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        tool_version=TOOL_VERSION,
        graphs={name: GraphEntry(member=member, precision="fp32") for name, member in graph_members.items()},
        tokenizer=TOKENIZER_MEMBER,
        labels=labels,
        preprocess=Preprocess(
            input_size=h.image_size,
            letterbox=True,
            pad_value=preprocess.PAD_VALUE,
            mean=list(preprocess.IMAGENET_MEAN),
            std=list(preprocess.IMAGENET_STD),
            color="RGB",
            layout="NCHW",
        ),
        hoi=HOIConstants(h.n_inst_queries, h.n_int_queries, h.n_image_tokens, h.d_model),
        decoder=consts,
        thresholds=Thresholds(
            anomaly={name: DEFAULT_THRESHOLDS.get(name, 0.5) for name in labels.anomalies},
            hoi_score=DEFAULT_HOI_SCORE,
            instance_score=DEFAULT_INSTANCE_SCORE,
        ),
        provenance=provenance,
    )


def export_bundle(
    ckpt: Checkpoint,
    out: str | Path,
    labels: Labels,
    check: bool = True,
    progress: bool = True,
    source: str = "",
) -> ExportResult:
    """Export, check parity (refusing to write on failure), and write `out`."""
    from h2a.runtime.bundle_writer import write_bundle

    tokenizer = CaptionTokenizer(ckpt.tokenizer_json)
    consts = decoder_constants(ckpt, tokenizer)
    graphs = export_graphs(ckpt, progress)
    report: ParityReport | None = None
    if check:
        if progress:
            tqdm.write("checking parity: ONNX Runtime vs torch, 32 greedy steps ...")
        report = check_parity(graphs, ckpt.hoi, ckpt.caption, consts)
        if not report.ok():
            raise ParityError(
                f"exported graphs disagree with torch (worst relative error {report.worst:.2e}, "
                f"greedy match {report.decode_match}, cache match {report.cache_match}); bundle not written"
            )
    members = {f"graphs/{name}.onnx": data for name, data in graphs.items()}
    members[TOKENIZER_MEMBER] = ckpt.tokenizer_json.encode("utf-8")
    provenance: dict[str, Any] = {
        "preset": ckpt.config.preset,
        "model_config": ckpt.config.to_dict(),
        "model_sha256": weights_sha256(ckpt.hoi, ckpt.caption),
        "data_sha256": ckpt.meta.get("data_sha256"),
        "weights": ckpt.meta.get("weights", "trained"),
        "source": source,
        "torch_version": torch.__version__,
        "onnx_opset": OPSET,
        "parity": None
        if report is None
        else {
            "max_relative_error": report.graph_errors,
            "greedy_steps": report.decode_steps,
            "greedy_match": report.decode_match,
            "cache_match": report.cache_match,
        },
        "calibration": None,
        "tensorrt": None,
    }
    manifest = build_manifest(
        ckpt, consts, labels, {name: f"graphs/{name}.onnx" for name in graphs}, provenance
    )
    manifest = write_bundle(out, manifest, members)
    return ExportResult(manifest, report, {name: len(data) for name, data in graphs.items()})
