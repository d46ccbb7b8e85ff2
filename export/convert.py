"""A bundle at another precision: int8 backbone for CPUs (export.quantize), fp16 graphs for
GPUs (export.half). The source bundle is left as it is; the new one gets the same manifest
with each converted graph's precision and conversion record, fresh SHA-256s, and where it
came from."""
from __future__ import annotations

import dataclasses
import os
import datetime as _dt
import shutil
import tempfile
from pathlib import Path

from monitor.model.integrity import sha256
from export.footage import Footage, backbone_batches, from_synthetic, from_videos
from export.half import measure, to_fp16
from export.quantize import DEFAULT_MIN_COSINE, quantize_backbone
from monitor import __version__
from monitor.model.bundle import Bundle
from monitor.model.manifest import BundleError, GraphSpec, Manifest
from monitor.video.preprocess import Geometry

DEFAULT_SNIPPETS = 24
HELD_OUT_EVERY = 4  # every 4th calibration snippet is kept out of calibration, to check it on


def split(footage: Footage) -> tuple[Footage, Footage]:
    """(calibration, held out): every HELD_OUT_EVERY-th snippet held out, the last one when
    there are fewer."""
    n = len(footage.snippets)
    held = (lambda i: i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) if n >= HELD_OUT_EVERY else (lambda i: i == n - 1)
    return footage.subset(lambda i: not held(i)), footage.subset(held)


def _copy_bundle(source: Path, out: Path, manifest: Manifest, skip: set[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in manifest.graphs.items():
        if name not in skip:
            shutil.copyfile(source / spec.file, out / spec.file)


def _write_manifest(source: Path, out: Path, manifest: Manifest, graphs: dict[str, GraphSpec],
                    precision: str, label: str | None) -> Manifest:
    new_source = dict(manifest.source)
    # Relative to the new bundle, so that the pair can move together (the shipped demo bundles).
    new_source["converted"] = {"from": label or os.path.relpath(source.resolve(), out.resolve()), "to": precision,
                               "from_sha256": new_source.get("sha256", {})}
    new_source["sha256"] = {g.file: sha256(out / g.file) for g in graphs.values()}
    converted = dataclasses.replace(
        manifest, graphs=graphs, source=new_source, producer=f"ssrl-monitor {__version__}",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    converted.write(out)
    return converted


def int8_bundle(source: Path, out: Path, videos: Path, *, snippets: int = DEFAULT_SNIPPETS,
                min_cosine: float = DEFAULT_MIN_COSINE, method: str = "percentile", label: str | None = None,
                log=lambda text: None) -> Manifest:
    """`source` bundle with its backbone statically quantised to int8 -> bundle `out`."""
    source, out = Path(source), Path(out)
    manifest = Manifest.read(source)
    if "backbone" not in manifest.graphs:
        raise BundleError(f"{source}: has no backbone graph (backbone.onnx) to quantise")
    geometry = Geometry.from_manifest(manifest)
    calib, held = split(from_videos(videos, snippets, geometry.snippet_length))
    log(f"  calibrating on {len(calib.snippets)} snippets of {len(calib.sources)} videos, "
        f"checking on {len(held.snippets)} held-out snippets")
    spec = manifest.graphs["backbone"]
    _copy_bundle(source, out, manifest, skip={"backbone"})
    pixels = manifest.takes_pixels  # the batches in the form the backbone takes
    record = quantize_backbone(source / spec.file, out / spec.file, backbone_batches(calib, geometry, pixels=pixels),
                               backbone_batches(held, geometry, pixels=pixels), min_cosine=min_cosine, method=method,
                               log=log)
    record["calibration"] = {"videos_dir": str(videos), **calib.describe(), "held_out_snippets": len(held.snippets)}
    graphs = dict(manifest.graphs)
    graphs["backbone"] = dataclasses.replace(spec, precision="int8", conversion=record)
    return _write_manifest(source, out, manifest, graphs, "int8", label)


def fp16_bundle(source: Path, out: Path, videos: Path | None = None, *, snippets: int = 16,
                label: str | None = None, log=lambda text: None) -> Manifest:
    """Every graph of `source` in fp16 -> bundle `out`, with the score difference to the
    fp32 bundle measured on the same snippets (of `videos`, else the synthetic camera)."""
    source, out = Path(source), Path(out)
    manifest = Manifest.read(source)
    out.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for name, spec in manifest.graphs.items():
        record = to_fp16(source / spec.file, out / spec.file)
        graphs[name] = dataclasses.replace(spec, precision="fp16", conversion=record)
    # Write once so the bundle loads, measure, then record what was measured.
    _write_manifest(source, out, manifest, graphs, "fp16", label)
    length = manifest.snippet_length
    footage = from_videos(videos, snippets, length) if videos is not None else from_synthetic(snippets, length=length)
    measured = measure(source, out, footage.snippets)
    measured["footage"] = footage.sources
    log(f"  fp16 vs fp32 on {measured['snippets']} snippets: " + ", ".join(
        f"{k} {v}" for k, v in measured.items() if k.endswith(("diff", "mean", "min"))))
    for spec in graphs.values():
        spec.conversion["measured"] = measured
    return _write_manifest(source, out, manifest, graphs, "fp16", label)


def converted_fresh(write_fp32, out: Path, convert) -> Manifest:
    """A new export at another precision: the fp32 bundle is written to a scratch
    directory by `write_fp32(dir)`, then `convert(scratch, out)` writes `out`."""
    with tempfile.TemporaryDirectory(prefix="ssrl-fp32-") as tmp:
        scratch = Path(tmp) / "fp32"
        write_fp32(scratch)
        manifest = convert(scratch, out)
    Bundle(out, providers="cpu")  # the new bundle loads: graphs and manifest agree
    return manifest
