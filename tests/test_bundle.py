"""Every refusal of a plan bundle, through the real CLI: exit 2 and one clear line."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from h2a.runtime.bundle import MANIFEST_NAME, load_bundle, sha256_hex
from h2a.runtime.errors import BundleError
from h2a.runtime.manifest import Manifest

from .conftest import run_cli


def read_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite(
    src: Path, dst: Path, edit: Callable[[dict[str, bytes], dict], None], rehash: bool = True
) -> Path:
    """Copy a bundle, letting `edit` change members and the manifest (as dict), then re-hash."""
    members = read_members(src)
    manifest = json.loads(members.pop(MANIFEST_NAME))
    edit(members, manifest)
    if rehash:
        manifest["members"] = {
            n: {"sha256": sha256_hex(d), "size": len(d)}
            for n, d in members.items()
            if n in manifest["members"]
        }
    with zipfile.ZipFile(dst, "w") as archive:
        archive.writestr(MANIFEST_NAME, json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name, data)
    return dst


def assert_refused(path: Path, *fragments: str, mode: tuple[str, ...] = ("--inspect",)) -> None:
    result = run_cli("h2a.edge.run_cli", "--engine", str(path), *mode, timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("edge-run: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_inspect_prints_a_summary(tiny_bundle: Path) -> None:
    result = run_cli("h2a.edge.run_cli", "--engine", str(tiny_bundle), "--inspect", timeout=120)
    assert result.returncode == 0, result.stderr
    for word in (
        "onnxruntime (installed)",
        "preset tiny",
        "hoi",
        "cap_encoder",
        "dec_step",
        "fighting",
        "parity",
    ):
        assert word in result.stdout


def test_good_bundle_loads_and_manifest_round_trips(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert Manifest.from_json(bundle.manifest.to_json()) == bundle.manifest


def test_truncated_file_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    data = tiny_bundle.read_bytes()
    cut = tmp_path / "cut.plan"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert_refused(cut, "truncated or not a zip archive")


def test_non_archive_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.plan"
    junk.write_text("this is not a bundle\n")
    assert_refused(junk, "not a plan bundle")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope.plan", "no such bundle file")


def test_member_hash_mismatch_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    def flip_a_byte(members: dict[str, bytes], manifest: dict) -> None:
        data = bytearray(members["graphs/dec_step.onnx"])
        data[len(data) // 2] ^= 0xFF
        members["graphs/dec_step.onnx"] = bytes(data)

    bad = rewrite(tiny_bundle, tmp_path / "bad.plan", flip_a_byte, rehash=False)
    assert_refused(bad, "graphs/dec_step.onnx", "does not match its sha256")


@pytest.mark.parametrize("evil", ["../evil.onnx", "/etc/evil.onnx", "graphs/../../evil.onnx", "C:/evil.onnx"])
def test_member_path_escaping_the_archive_is_refused(tiny_bundle: Path, tmp_path: Path, evil: str) -> None:
    def add_escape(members: dict[str, bytes], manifest: dict) -> None:
        members[evil] = b"x"
        manifest["members"][evil] = {}

    bad = rewrite(tiny_bundle, tmp_path / "escape.plan", add_escape)
    assert_refused(bad, "escapes the archive")


def test_missing_member_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    def drop(members: dict[str, bytes], manifest: dict) -> None:
        del members["tokenizer.json"]

    bad = rewrite(tiny_bundle, tmp_path / "missing.plan", drop, rehash=False)
    assert_refused(bad, "'tokenizer.json' is missing")


def test_unlisted_member_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    def smuggle(members: dict[str, bytes], manifest: dict) -> None:
        members["extra.bin"] = b"payload"

    bad = rewrite(tiny_bundle, tmp_path / "extra.plan", smuggle)
    assert_refused(bad, "'extra.bin' is not listed")


def test_unknown_format_version_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    def bump(members: dict[str, bytes], manifest: dict) -> None:
        manifest["format_version"] = 99

    bad = rewrite(tiny_bundle, tmp_path / "future.plan", bump)
    assert_refused(bad, "unknown bundle format version 99")


def test_missing_manifest_key_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    def drop_key(members: dict[str, bytes], manifest: dict) -> None:
        del manifest["decoder"]["eos_id"]

    bad = rewrite(tiny_bundle, tmp_path / "nokey.plan", drop_key)
    assert_refused(bad, "missing key 'decoder.eos_id'")


def test_wrong_type_in_manifest_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    def wrong(members: dict[str, bytes], manifest: dict) -> None:
        manifest["preprocess"]["input_size"] = "big"

    bad = rewrite(tiny_bundle, tmp_path / "type.plan", wrong)
    assert_refused(bad, "'preprocess.input_size' must be int")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("labels.objects", "person", "'labels.objects' must be a list, got str"),
        ("labels.anomalies", None, "'labels.anomalies' must be a list, got null"),
        ("thresholds.anomaly", "oops", "'thresholds.anomaly' must be an object, got str"),
        ("thresholds.anomaly.fighting", "high", "'thresholds.anomaly.fighting' must be float, got str"),
        ("graphs.hoi.precision", "int4", "'graphs.hoi.precision' must be one of fp32, fp16, int8"),
        ("preprocess.mean", [0.5, "x", 0.5], "'preprocess.mean[1]' must be float, got str"),
        ("decoder.eos_id", True, "'decoder.eos_id' must be int, got bool"),
    ],
)
def test_mistyped_nested_manifest_values_are_named(
    tiny_bundle: Path, tmp_path: Path, key: str, value: object, message: str
) -> None:
    def mistype(members: dict[str, bytes], manifest: dict) -> None:
        *parents, last = key.split(".")
        node = manifest
        for part in parents:
            node = node[part]
        node[last] = value

    bad = rewrite(tiny_bundle, tmp_path / "mistyped.plan", mistype)
    assert_refused(bad, message)


def test_backend_not_installed_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    def to_tensorrt(members: dict[str, bytes], manifest: dict) -> None:
        manifest["backend"] = "tensorrt"

    bad = rewrite(tiny_bundle, tmp_path / "trt.plan", to_tensorrt)
    with pytest.raises(BundleError, match="runs on tensorrt, which is not installed"):
        load_bundle(bad)
    assert_refused(bad, "tensorrt, which is not installed", mode=("--camera", "0"))
    # --inspect still works on a machine without the bundle's backend
    result = run_cli("h2a.edge.run_cli", "--engine", str(bad), "--inspect", timeout=120)
    assert result.returncode == 0 and "NOT installed here" in result.stdout


def test_a_graph_that_breaks_the_contract_is_refused_at_load(tiny_bundle: Path, tmp_path: Path) -> None:
    """The manifest claims another input size than the hoi graph was exported with."""

    def resize(members: dict[str, bytes], manifest: dict) -> None:
        manifest["preprocess"]["input_size"] += 32

    bad = rewrite(tiny_bundle, tmp_path / "resized.plan", resize)
    assert_refused(
        bad,
        "graph 'hoi' input 'images' is float32 (?, 3,",
        "the contract and manifest say",
        mode=("--camera", "0"),
    )


def test_contract_check_names_missing_and_mistyped_tensors() -> None:
    from h2a.runtime.graphs import CAP_ENCODER, TensorInfo, check_graph

    sizes = {"T": 4, "D": 8, "G": 3, "M": 7, "Dc": 8, "L": 2, "H": 2, "dh": 4}
    good_in = [TensorInfo(t.name, t.dtype, tuple(None for _ in t.shape)) for t in CAP_ENCODER.inputs]
    good_out = [TensorInfo(t.name, t.dtype, tuple(None for _ in t.shape)) for t in CAP_ENCODER.outputs]
    check_graph(CAP_ENCODER, good_in, good_out, sizes)  # open sizes are accepted
    with pytest.raises(BundleError, match="input 'tag_boxes' is missing"):
        check_graph(CAP_ENCODER, good_in[:-1], good_out, sizes)
    mistyped = [*good_in[:1], TensorInfo("tag_ids", "float32", (None, 3)), *good_in[2:]]
    with pytest.raises(
        BundleError, match="input 'tag_ids' is float32 \\(\\?, 3\\), the contract and manifest say int64"
    ):
        check_graph(CAP_ENCODER, mistyped, good_out, sizes)
    wrong_size = [TensorInfo("memory", "float32", (1, 7, 9)), *good_out[1:]]
    with pytest.raises(BundleError, match="output 'memory' is float32 \\(1, 7, 9\\)"):
        check_graph(CAP_ENCODER, good_in, wrong_size, sizes)
