"""The SSRL head cut into the two graphs the monitor runs (DESIGN.md):

- spatial: one snippet's crops and patches -> crops with patch relations added; runs once
  per snippet, so the live engine caches its output.
- temporal: a window of fused snippets [B, T, C, F] -> crop-averaged scores [B, T].
- temporal_at: the same at chosen positions [K] of the window -> [B, K] (export.temporal_at),
  what the live engine runs for the one snippet it reports.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export.temporal_at import TemporalAt
from monitor.model.manifest import (SPATIAL_INPUTS, SPATIAL_OUTPUTS, TEMPORAL_AT_INPUTS, TEMPORAL_AT_OUTPUTS,
                                    TEMPORAL_INPUTS, TEMPORAL_OUTPUTS)
from training.ssrl import SSRL

OPSET = 17


class SpatialHead(nn.Module):
    def __init__(self, model: SSRL):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        return self.model.fuse(crops, patches)


class TemporalHead(nn.Module):
    def __init__(self, model: SSRL):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        crops = features.permute(0, 2, 1, 3)  # [B, T, C, F] -> [B, C, T, F]
        return self.model.crop_scores(self.model.clip_features(crops)).mean(dim=1)


def export_onnx(module: nn.Module, args: tuple, path: Path, inputs, outputs, dynamic_axes) -> None:
    """Every graph of a bundle is written this way (TorchScript exporter, OPSET) and checked."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(module.eval(), args, str(path), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    # Path-based check: handles graphs beyond protobuf's in-memory 2 GB limit.
    onnx.checker.check_model(str(path), full_check=True)


def export_spatial(model: SSRL, path: Path) -> dict:
    c, f, p = model.config.crops, model.config.feature_size, sum(model.config.patches)
    args = (torch.randn(2, c, f), torch.randn(2, p, f))
    export_onnx(SpatialHead(model), args, path, SPATIAL_INPUTS, SPATIAL_OUTPUTS,
            {"crops": {0: "snippets"}, "patches": {0: "snippets"}, "fused": {0: "snippets"}})
    return {"inputs": {"crops": ["snippets", c, f], "patches": ["snippets", p, f]},
            "outputs": {"fused": ["snippets", c, f]}}


def export_temporal(model: SSRL, path: Path) -> dict:
    c, f = model.config.crops, model.config.feature_size
    args = (torch.randn(2, 5, c, f),)
    export_onnx(TemporalHead(model), args, path, TEMPORAL_INPUTS, TEMPORAL_OUTPUTS,
            {"features": {0: "batch", 1: "time"}, "scores": {0: "batch", 1: "time"}})
    return {"inputs": {"features": ["batch", "time", c, f]}, "outputs": {"scores": ["batch", "time"]}}


def export_temporal_at(model: SSRL, path: Path) -> dict:
    c, f = model.config.crops, model.config.feature_size
    args = (torch.randn(2, 5, c, f), torch.tensor([3, 4]))
    export_onnx(TemporalAt(model), args, path, TEMPORAL_AT_INPUTS, TEMPORAL_AT_OUTPUTS,
                {"features": {0: "batch", 1: "time"}, "positions": {0: "positions"},
                 "scores": {0: "batch", 1: "positions"}})
    return {"inputs": {"features": ["batch", "time", c, f], "positions": ["positions"]},
            "outputs": {"scores": ["batch", "positions"]}}
