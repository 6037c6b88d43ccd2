"""Read and check a plan bundle (`h2a.plan`) before anything in it is loaded.

A bundle is a zip archive: `manifest.json`, the graphs, `tokenizer.json`. Every check runs
before a single graph reaches a backend, and each refusal is a `BundleError` with one line that
says what is wrong and what to do: not an archive or truncated, a member path that would escape
the archive, a member missing, unlisted or not matching its sha256, an unknown format version,
a backend that is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from h2a.runtime.errors import BundleError
from h2a.runtime.manifest import Manifest, Member

MANIFEST_NAME = "manifest.json"
#: Which importable module each backend needs, and how to get it.
BACKEND_MODULES = {
    "onnxruntime": ("onnxruntime", "pip install 'hoi2anomaly-edge[cpu]'"),
    "openvino": ("openvino", "pip install 'hoi2anomaly-edge[openvino]'"),
    "tensorrt": (
        "tensorrt",
        "use JetPack's TensorRT (apt install python3-libnvinfer) in a venv made with --system-site-packages",
    ),
}

#: The backends that can run a bundle, by the graph format its manifest names.
RUNS_ON = {"onnxruntime": ("onnxruntime", "openvino"), "tensorrt": ("tensorrt",)}


@dataclass(frozen=True)
class Bundle:
    """A checked bundle. Members are read on demand (and their hash checked again then), so a
    200 MB graph is not held in memory beside the session made from it, and a file swapped on
    disk after the check is still refused."""

    path: Path
    manifest: Manifest

    def member(self, name: str) -> bytes:
        expected = self.manifest.members.get(name)
        if expected is None:
            raise BundleError(f"{self.path}: no member {name!r} in the manifest")
        try:
            archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError):
            raise BundleError(f"{self.path}: the bundle changed or vanished after it was checked") from None
        with archive:
            data = _read(archive, self.path, name)
        _check_member(self.path, name, (len(data), sha256_hex(data)), expected)
        return data

    def graph_bytes(self, name: str) -> bytes:
        return self.member(self.manifest.graphs[name].member)

    def tokenizer_json(self) -> str:
        return self.member(self.manifest.tokenizer).decode("utf-8")

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_member_path(name: str) -> None:
    """Refuse names that could land outside an extraction folder or mean different files on Windows."""
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or path.is_absolute()
        or ".." in path.parts
        or (len(name) > 1 and name[1] == ":")
    ):
        raise BundleError(f"member path {name!r} escapes the archive; refusing this bundle")


def backend_available(backend: str) -> bool:
    module, _ = BACKEND_MODULES[backend]
    return importlib.util.find_spec(module) is not None


def load_bundle(path: str | Path, require_backend: bool = True) -> Bundle:
    """Open, check and read a bundle. `require_backend=False` serves `--inspect` on any machine."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise BundleError(
            f"{path}: not a plan bundle (truncated or not a zip archive); copy it again or re-export it"
        ) from None
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        for name in names:
            check_member_path(name)
        if len(set(names)) != len(names):
            raise BundleError(f"{path}: an archive member appears twice; refusing this bundle")
        if MANIFEST_NAME not in names:
            raise BundleError(f"{path}: no {MANIFEST_NAME} in the archive; not a plan bundle")
        manifest = Manifest.from_json(_read(archive, path, MANIFEST_NAME).decode("utf-8", errors="replace"))
        listed = set(manifest.members)
        for name in listed:
            check_member_path(name)
        needed = {g.member for g in manifest.graphs.values()} | {manifest.tokenizer}
        for name in sorted(needed - listed):
            raise BundleError(f"{path}: manifest names member {name!r} but gives no sha256 for it")
        for name in sorted(listed - set(names)):
            raise BundleError(f"{path}: member {name!r} is missing from the archive; re-export the bundle")
        for name in sorted(set(names) - listed - {MANIFEST_NAME}):
            raise BundleError(f"{path}: member {name!r} is not listed in the manifest; refusing this bundle")
        for name in sorted(listed):
            _check_member(path, name, _hash_member(archive, path, name), manifest.members[name])
    if require_backend and not any(backend_available(b) for b in RUNS_ON[manifest.backend]):
        _, how = BACKEND_MODULES[manifest.backend]
        raise BundleError(
            f"{path}: this bundle runs on {' or '.join(RUNS_ON[manifest.backend])}, "
            f"which is not installed here ({how})"
        )
    return Bundle(path=path, manifest=manifest)


def _read(archive: zipfile.ZipFile, path: Path, name: str) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
        raise BundleError(f"{path}: member {name!r} cannot be read ({err}); the file is damaged") from None


def _hash_member(archive: zipfile.ZipFile, path: Path, name: str) -> tuple[int, str]:
    """(size, sha256) of a member, streamed: checking a bundle never holds a graph in memory."""
    digest, size = hashlib.sha256(), 0
    try:
        with archive.open(name) as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
        raise BundleError(f"{path}: member {name!r} cannot be read ({err}); the file is damaged") from None
    return size, digest.hexdigest()


def _check_member(path: Path, name: str, size_and_digest: tuple[int, str], expected: Member) -> None:
    size, digest = size_and_digest
    if size != expected.size or digest != expected.sha256:
        raise BundleError(
            f"{path}: member {name!r} does not match its sha256 in the manifest "
            "(corrupted or altered); copy the bundle again or re-export it"
        )
