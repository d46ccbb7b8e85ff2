"""An existing bundle copied to a new directory with some of its graphs changed or added, and
its manifest rewritten over the copy as read, so that fields this monitor does not know
survive (export.pixel_input, export.temporal_weights). No PyTorch here."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from monitor.model.integrity import sha256
from monitor.model.manifest import MANIFEST_NAME, BundleError, Manifest


def copy_bundle(source: Path, out: Path) -> None:
    """Copy bundle `source` into `out`, which must be new or empty (the same directory: nothing)."""
    if out.resolve() == source.resolve():
        return
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out}: exists and is not empty; give a new directory")
    shutil.copytree(source, out, dirs_exist_ok=True)


def rewrite_manifest(out: Path, manifest: Manifest, fields: tuple[str, ...], changed: list[str]) -> Manifest:
    """Write `manifest`'s `fields` over the manifest in `out`, with fresh SHA-256s of the
    `changed` graph files; the manifest as it now reads."""
    sums = manifest.source.get("sha256")
    if isinstance(sums, dict):
        for file in changed:
            sums[file] = sha256(out / file)
    data = json.loads((out / MANIFEST_NAME).read_text())
    data.update({k: v for k, v in manifest.to_dict().items() if k in fields})
    (out / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n")
    return Manifest.read(out)
