"""The backbone graph of a bundle: clips [N, 3, 16, H, W] -> features [N, F], with the
preprocessing geometry it expects recorded for the manifest."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.onnx_graphs import export_onnx
from monitor.model.manifest import BACKBONE_INPUTS, BACKBONE_OUTPUTS, GraphSpec
from monitor.video.preprocess import Geometry

BACKBONE_FILE = "backbone.onnx"


def clip_shape(geometry: Geometry) -> list:
    """[N, 3, T, H, W] of the graph input. Crops and patches go through the same graph; when
    their sizes differ the spatial dims are left symbolic, otherwise they are fixed (which lets
    TensorRT build one engine)."""
    t = geometry.snippet_length
    if geometry.crop_size == geometry.patch_size or not geometry.grids:
        return ["clips", 3, t, geometry.crop_size, geometry.crop_size]
    return ["clips", 3, t, "height", "width"]


def export_backbone(module: nn.Module, out_dir: str | Path, geometry: Geometry, feature_size: int) -> GraphSpec:
    """Write `module` (clips -> [N, feature_size]) as backbone.onnx in `out_dir`, check it, and
    return its GraphSpec. The manifest's "preprocessing" field is `geometry.to_dict()`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / BACKBONE_FILE
    shape = clip_shape(geometry)
    dynamic = {"clips": {i: name for i, name in enumerate(shape) if isinstance(name, str)},
               "features": {0: "clips"}}
    example = torch.zeros(2, 3, geometry.snippet_length, geometry.crop_size, geometry.crop_size)
    module = module.eval()
    with torch.no_grad():
        got = module(example)
    if tuple(got.shape) != (2, feature_size):
        raise ValueError(f"backbone gives features of shape {list(got.shape[1:])} per clip, "
                         f"but feature_size is {feature_size}")
    export_onnx(module, (example,), path, BACKBONE_INPUTS, BACKBONE_OUTPUTS, dynamic)
    return GraphSpec(path.name, {"clips": shape}, {"features": ["clips", feature_size]})
