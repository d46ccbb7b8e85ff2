"""The graphs of a bundle checked against the SHA-256 that export wrote into the manifest
(`source.sha256`: file name -> hex digest), before ONNX Runtime loads them: a graph changed
after export (a zeroed weight, a swapped file) or a manifest whose hash was edited is refused,
naming the graph."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from monitor.model.manifest import BundleError

_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_graph(name: str, file: Path, hashes, source: str) -> None:
    """Raise BundleError unless `file` has the digest the manifest records for it. A manifest
    with no `source.sha256` at all (written by hand, or before export wrote hashes) is let
    through; one that has the table must list every graph."""
    if hashes is None:
        return
    if not isinstance(hashes, dict):
        raise BundleError(f"{source}: field 'source.sha256' must map graph files to SHA-256 hex digests")
    expected = hashes.get(file.name)
    if expected is None:
        raise BundleError(f"{source}: field 'source.sha256' has no hash for the {name} graph ({file.name})")
    if not isinstance(expected, str) or not _HEX64.fullmatch(expected.lower()):
        raise BundleError(f"{source}: field 'source.sha256.{file.name}' = {expected!r}: not a SHA-256 hex digest")
    actual = sha256(file)
    if actual != expected.lower():
        raise BundleError(f"{file}: the {name} graph's SHA-256 is {actual[:16]}…, the manifest's 'source.sha256' "
                          f"says {expected[:16]}…: the graph was changed after export (or the manifest was edited)")
