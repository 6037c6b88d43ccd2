"""Write a plan bundle: a zip of manifest.json, graphs and tokenizer.json, each member hashed.

Members are stored uncompressed (ONNX weights barely compress, and stored members can be read
without inflating). The archive is written to a temporary name and renamed, so a reader never
sees half a bundle.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

from h2a.runtime.bundle import MANIFEST_NAME, check_member_path, sha256_hex
from h2a.runtime.manifest import Manifest, Member


def write_bundle(path: str | Path, manifest: Manifest, members: dict[str, bytes]) -> Manifest:
    """Fill the manifest's member hashes from `members` and write the archive; returns the manifest."""
    path = Path(path)
    for name in members:
        check_member_path(name)
    hashed = {name: Member(sha256=sha256_hex(data), size=len(data)) for name, data in members.items()}
    manifest = dataclasses.replace(manifest, members=hashed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(MANIFEST_NAME, manifest.to_json())
        for name in sorted(members):
            archive.writestr(name, members[name])
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)
    return manifest
