"""`edge-export`: write a plan bundle from a checkpoint, a training folder or random weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from h2a.export_tools.checkpoint import Checkpoint, load_checkpoint
from h2a.export_tools.export.exporter import ExportResult, ParityError, export_bundle
from h2a.export_tools.models import CaptionModel, HOIEncoder, make_config
from h2a.export_tools.models.config import PRESETS
from h2a.export_tools.taxonomy import ACTIONS, ANOMALIES, OBJECTS
from h2a.export_tools.tokenizer_build import default_tokenizer
from h2a.runtime.errors import H2AError, InputError
from h2a.runtime.manifest import Labels

MODEL_DIR_CHECKPOINT = "model.pt"


def random_checkpoint(preset: str, seed: int) -> Checkpoint:
    """Untrained models of a preset with the built-in tokenizer: for plumbing, tests and timing."""
    tokenizer = default_tokenizer()
    config = make_config(preset, tokenizer.get_vocab_size())
    torch.manual_seed(seed)
    hoi, caption = HOIEncoder(config.hoi).eval(), CaptionModel(config.caption).eval()
    return Checkpoint(config, hoi, caption, tokenizer.to_str(), {"weights": f"random-init (seed {seed})"})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edge-export",
        description="Export the HOI encoder and caption model to a plan bundle (one file).",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a checkpoint written by edge-train")
    src.add_argument(
        "--model-dir", type=Path, help=f"a training output folder (uses DIR/{MODEL_DIR_CHECKPOINT})"
    )
    src.add_argument(
        "--random-init", action="store_true", help="untrained weights (plumbing and timing only)"
    )
    parser.add_argument("--preset", choices=PRESETS, default="tiny", help="model size with --random-init")
    parser.add_argument("--seed", type=int, default=0, help="weight seed with --random-init (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="bundle to write, e.g. h2a.plan")
    parser.add_argument(
        "--backend",
        choices=("onnxruntime",),
        default="onnxruntime",
        help="graph format inside the bundle (default onnxruntime)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs torch parity check")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
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
                "labels",
                {
                    "objects": list(OBJECTS),
                    "actions": list(ACTIONS),
                    "anomalies": list(ANOMALIES),
                },
            )
        )
        result = export_bundle(
            ckpt, args.out, labels, check=not args.no_check, progress=not args.quiet, source=source
        )
    except H2AError as err:
        print(f"edge-export: error: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, ParityError, OSError) as err:
        print(f"edge-export: error: {err}", file=sys.stderr)
        return 1
    params = {
        "hoi": sum(p.numel() for p in ckpt.hoi.parameters()),
        "caption": sum(p.numel() for p in ckpt.caption.parameters()),
    }
    print(describe(result, args.out, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
