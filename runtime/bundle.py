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
from h2a.runtime.manifest import Manifest

MANIFEST_NAME = "manifest.json"
#: Which importable module each backend needs, and how to get it.
BACKEND_MODULES = {
    "onnxruntime": ("onnxruntime", "pip install 'hoi2anomaly-edge[cpu]'"),
    "tensorrt": (
        "tensorrt",
        "use JetPack's TensorRT (apt install python3-libnvinfer) in a venv made with --system-site-packages",
    ),
}


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest
    members: dict[str, bytes]  # verified contents, by archive path

    def graph_bytes(self, name: str) -> bytes:
        return self.members[self.manifest.graphs[name].member]

    def tokenizer_json(self) -> str:
        return self.members[self.manifest.tokenizer].decode("utf-8")

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
        members: dict[str, bytes] = {}
        for name in sorted(listed):
            data = _read(archive, path, name)
            expected = manifest.members[name]
            if len(data) != expected.size or sha256_hex(data) != expected.sha256:
                raise BundleError(
                    f"{path}: member {name!r} does not match its sha256 in the manifest "
                    "(corrupted or altered); copy the bundle again or re-export it"
                )
            members[name] = data
    if require_backend and not backend_available(manifest.backend):
        _, how = BACKEND_MODULES[manifest.backend]
        raise BundleError(
            f"{path}: this bundle runs on {manifest.backend}, which is not installed here ({how})"
        )
    return Bundle(path=path, manifest=manifest, members=members)


def _read(archive: zipfile.ZipFile, path: Path, name: str) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
        raise BundleError(f"{path}: member {name!r} cannot be read ({err}); the file is damaged") from None
