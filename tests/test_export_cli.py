from __future__ import annotations

from pathlib import Path

from h2a.export_tools.checkpoint import load_checkpoint, save_checkpoint, weights_sha256
from h2a.export_tools.export.torch_cli import random_checkpoint
from h2a.runtime.bundle import load_bundle

from .conftest import run_cli


def test_checkpoint_round_trip_and_export(tmp_path: Path) -> None:
    ckpt = random_checkpoint("tiny", seed=3)
    ckpt.meta["data_sha256"] = "ab" * 32
    save_checkpoint(tmp_path / "model.pt", ckpt)
    loaded, _ = load_checkpoint(tmp_path / "model.pt")
    assert weights_sha256(loaded.hoi, loaded.caption) == weights_sha256(ckpt.hoi, ckpt.caption)

    out = tmp_path / "from_dir.plan"
    result = run_cli(
        "h2a.export_tools.export.cli", "--model-dir", str(tmp_path), "--out", str(out), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert "parity (max relative error)" in result.stdout
    manifest = load_bundle(out).manifest
    assert manifest.provenance["model_sha256"] == weights_sha256(ckpt.hoi, ckpt.caption)
    assert manifest.provenance["data_sha256"] == "ab" * 32


def test_missing_checkpoint_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run_cli(
        "h2a.export_tools.export.cli",
        "--checkpoint",
        str(tmp_path / "none.pt"),
        "--out",
        str(tmp_path / "x.plan"),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"edge-export: error: {tmp_path / 'none.pt'}: no such checkpoint"
    ]
    assert not (tmp_path / "x.plan").exists()


def test_corrupt_checkpoint_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_cli(
        "h2a.export_tools.export.cli", "--checkpoint", str(bad), "--out", str(tmp_path / "x.plan")
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_cli_names_the_same_presets_as_the_models() -> None:
    """edge-export lists the presets without importing torch; they must stay the models' own."""
    from h2a.export_tools.export import cli
    from h2a.export_tools.models import config

    assert cli.PRESETS == config.PRESETS
