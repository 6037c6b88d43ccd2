"""The torch side of `edge-export`: checkpoint (or random weights) -> ONNX graphs -> bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from h2a.export_tools.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from h2a.export_tools.export.baseline_decoder import export_no_cache_decoder
from h2a.export_tools.export.cli import MODEL_DIR_CHECKPOINT
from h2a.export_tools.export.exporter import ExportResult, ParityError, export_bundle
from h2a.export_tools.models import CaptionModel, HOIEncoder, make_config
from h2a.export_tools.taxonomy import ACTIONS, ANOMALIES, OBJECTS
from h2a.export_tools.tokenizer_build import default_tokenizer
from h2a.runtime.errors import H2AError, InputError
from h2a.runtime.manifest import Labels


def random_checkpoint(preset: str, seed: int) -> Checkpoint:
    """Untrained models of a preset with the built-in tokenizer: for plumbing, tests and timing."""
    tokenizer = default_tokenizer()
    config = make_config(preset, tokenizer.get_vocab_size())
    torch.manual_seed(seed)
    hoi, caption = HOIEncoder(config.hoi).eval(), CaptionModel(config.caption).eval()
    return Checkpoint(config, hoi, caption, tokenizer.to_str(), {"weights": f"random-init (seed {seed})"})


def describe(result: ExportResult, out: Path, params: dict[str, int]) -> str:
    lines = [f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"]
    for name, size in result.graph_sizes.items():
        lines.append(f"  {name:<12} {size / 1e6:8.2f} MB ONNX")
    lines.append("  parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in params.items()))
    if result.parity is not None:
        p = result.parity
        worst = {g: max(e.values()) for g, e in p.graph_errors.items()}
        lines.append("  parity (max relative error): " + ", ".join(f"{g} {e:.1e}" for g, e in worst.items()))
        lines.append(
            f"  greedy decoding over {p.decode_steps} steps: ORT == torch: {p.decode_match}, "
            f"KV cache == recompute: {p.cache_match}"
        )
    return "\n".join(lines)


def export_from_torch(args: argparse.Namespace) -> None:
    try:
        _export(args)
    except (ValueError, ParityError) as err:  # a checkpoint that does not fit, a failed parity check
        raise H2AError(str(err)) from None


def _export(args: argparse.Namespace) -> None:
    if args.random_init:
        ckpt, source = random_checkpoint(args.preset, args.seed), f"random-init preset {args.preset}"
    else:
        path = args.checkpoint or args.model_dir / MODEL_DIR_CHECKPOINT
        if not path.is_file():
            raise InputError(f"{path}: no such checkpoint")
        ckpt, _ = load_checkpoint(path)
        source = path.name
    labels = Labels(
        **ckpt.meta.get(
            "labels", {"objects": list(OBJECTS), "actions": list(ACTIONS), "anomalies": list(ANOMALIES)}
        )
    )
    result = export_bundle(
        ckpt, args.out, labels, check=not args.no_check, progress=not args.quiet, source=source
    )
    params = {
        "hoi": sum(p.numel() for p in ckpt.hoi.parameters()),
        "caption": sum(p.numel() for p in ckpt.caption.parameters()),
    }
    print(describe(result, args.out, params))
    if args.save_checkpoint:
        save_checkpoint(args.save_checkpoint, ckpt)
        print(f"  checkpoint: {args.save_checkpoint}")
    if args.no_cache_decoder:
        export_no_cache_decoder(ckpt.caption, args.no_cache_decoder)
        print(f"  no-cache decoder (benchmark baseline): {args.no_cache_decoder}")
