"""A bundle's identity: the SHA-256 of its manifest and of every graph it names, so that
anything learnt with one bundle (a camera's calibration) is never applied to another, even
one with the same name and path."""
from __future__ import annotations

import hashlib
from pathlib import Path

from monitor.model.integrity import sha256
from monitor.model.manifest import MANIFEST_NAME, Manifest

_cache: dict[tuple, str] = {}   # (path, size, mtime) of every file -> digest: a restart in-process hashes once


def bundle_sha(directory: str | Path, manifest: Manifest | None = None) -> str:
    """Hex SHA-256 over the manifest's bytes and each graph's name and SHA-256."""
    directory = Path(directory)
    manifest = manifest or Manifest.read(directory)
    files = [directory / MANIFEST_NAME] + [directory / manifest.graphs[name].file for name in sorted(manifest.graphs)]
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key in _cache:
        return _cache[key]
    digest = hashlib.sha256(b"manifest\0" + files[0].read_bytes())
    for name in sorted(manifest.graphs):
        digest.update(f"\0{name}\0{sha256(directory / manifest.graphs[name].file)}".encode())
    _cache[key] = digest.hexdigest()
    return _cache[key]
