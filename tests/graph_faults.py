"""Bundles made faulty for real, by editing their ONNX graphs with the onnx library."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def rehash(bundle: Path) -> None:
    """Write the graphs' real SHA-256 into the manifest (as export does), after an edit."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["source"]["sha256"] = {spec["file"]: hashlib.sha256((bundle / spec["file"]).read_bytes()).hexdigest()
                                    for spec in manifest["graphs"].values()}
    path.write_text(json.dumps(manifest, indent=2))


def nan_above_brightness(src: Path, out: Path, level: float = 0.9) -> Path:
    """A copy of a brightness bundle (tests.factories) whose backbone gives NaN features for
    clips brighter than `level` (feature 0 is the clip's mean in [-1, 1]) and the same
    features as before otherwise: features + 0 * sqrt(level - features[:, :1])."""
    shutil.copytree(src, out)
    model = onnx.load(str(out / "backbone.onnx"))
    graph = model.graph
    final = next(n for n in graph.node if "features" in n.output)
    final.output[list(final.output).index("features")] = "features_clean"
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], np.int64), "nan_start"),
        numpy_helper.from_array(np.array([1], np.int64), "nan_end"),
        numpy_helper.from_array(np.array([1], np.int64), "nan_axis"),
        numpy_helper.from_array(np.array(level, np.float32), "nan_level"),
        numpy_helper.from_array(np.array(0.0, np.float32), "nan_zero"),
    ])
    graph.node.extend([
        helper.make_node("Slice", ["features_clean", "nan_start", "nan_end", "nan_axis"], ["nan_brightness"]),
        helper.make_node("Sub", ["nan_level", "nan_brightness"], ["nan_margin"]),
        helper.make_node("Sqrt", ["nan_margin"], ["nan_root"]),          # NaN where brightness > level
        helper.make_node("Mul", ["nan_root", "nan_zero"], ["nan_term"]),  # 0 where finite, NaN where not
        helper.make_node("Add", ["features_clean", "nan_term"], ["features"]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "backbone.onnx"))
    rehash(out)
    return out
