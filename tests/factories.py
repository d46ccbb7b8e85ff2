"""Small seeded bundles and videos for the live-engine tests and benchmarks.

The bundle's backbone is made sensitive to something a test controls, the mean brightness
of the clip: feature 0 is the clip's mean pixel value (in [-1, 1]) and the other features
are small seeded 3-D convolution responses. The SSRL head is seeded too, then set so that
feature 0 passes through untouched (the patch branch and the clip relation block write
nothing into it) and the classifier reads score = sigmoid(GAIN * feature 0): dark video
scores near 0, bright video near 1, whatever the other features do. So a test video that
is dark, then bright, then dark raises exactly one alert, deterministically.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from export.backbone import export_backbone
from export.bundle_writer import write_bundle
from monitor.video.preprocess import Geometry
from training.ssrl import SSRL, SSRLConfig

GAIN = 10.0
DARK, BRIGHT = 25, 230
FRAME_SIZE = (96, 72)   # the geometry's resized frame, width x height
VIDEO_SIZE = (128, 96)  # what the test videos hold (the preprocessing resizes)


class BrightnessBackbone(nn.Module):
    """clips [N, 3, T, H, W] in [-1, 1] -> [N, F]: the mean, then F - 1 seeded conv features."""

    def __init__(self, features: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv3d(3, features - 1, kernel_size=3, stride=(2, 4, 4), padding=1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        mean = clips.mean(dim=(1, 2, 3, 4)).unsqueeze(1)
        other = torch.relu(self.conv(clips)).mean(dim=(2, 3, 4)) * 0.1
        return torch.cat([mean, other], dim=1)


def brightness_head(stage: int, feature_size: int, crops: int, grids: tuple[int, ...], seed: int) -> SSRL:
    torch.manual_seed(seed)
    model = SSRL(SSRLConfig(stage=stage, grids=grids, crops=crops, feature_size=feature_size)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.05)
                m.running_var.uniform_(0.8, 1.2)
        # The clip relation block adds conv_5's output to its input: keep row 0 out of it.
        final_conv, final_bn = model.Aggregate_clip.conv_5[0], model.Aggregate_clip.conv_5[2]
        final_conv.weight[0] = 0
        final_bn.running_mean[0], final_bn.bias[0] = 0, 0
        # The patch branch adds relu(linear_out) to every crop: keep row 0 out of it.
        for linear in model.linear_out:
            linear.weight[0] = 0
            linear.bias[0] = 0
        # Classifier: h0 = relu(x0), h1 = relu(-x0); score = sigmoid(GAIN * (h0 - h1)).
        c = model.classfier
        for layer in (c.fc1, c.fc2, c.fc3):
            layer.weight.zero_()
            layer.bias.zero_()
        c.fc1.weight[0, 0], c.fc1.weight[1, 0] = 1.0, -1.0
        c.fc2.weight[0, 0], c.fc2.weight[1, 1] = 1.0, 1.0
        c.fc3.weight[0, 0], c.fc3.weight[0, 1] = GAIN, -GAIN
    return model


def build_bundle(out: str | Path, *, stage: int = 2, feature_size: int = 32, crops: int = 1,
                 grids: tuple[int, ...] = (23, 35, 47), frame_size=FRAME_SIZE, crop_size: int = 64,
                 patch_size: int = 32, window: int = 8, threshold: float = 0.5, seed: int = 0,
                 head: SSRL | None = None) -> Path:
    """Export a brightness bundle (or `head` with the brightness backbone) into `out`."""
    out = Path(out)
    model = head or brightness_head(stage, feature_size, crops, grids, seed)
    cfg = model.config
    geometry = Geometry(frame_size=frame_size, crop_size=crop_size, crops=cfg.crops,
                        grids=cfg.active_grids, patch_size=patch_size, resize="fast")
    spec = export_backbone(BrightnessBackbone(cfg.feature_size, seed), out, geometry, cfg.feature_size)
    write_bundle(out, model, graphs={"backbone": spec}, preprocessing=geometry.to_dict(),
                 source={"name": f"test-brightness-s{cfg.stage}"}, window=window, threshold=threshold)
    return out


@functools.lru_cache(maxsize=None)
def cached_bundle(**kwargs) -> Path:
    """One bundle per set of arguments per test session (exporting takes a few seconds)."""
    return build_bundle(Path(tempfile.mkdtemp(prefix="ssrl-live-bundle-")) / "bundle", **kwargs)


def write_video(path: str | Path, segments: list[tuple[int, int]], size=VIDEO_SIZE, fps: float = 25.0,
                seed: int = 0) -> Path:
    """An MJPEG .avi of `segments` [(frames, brightness 0..255)], with a little seeded texture
    so that frames are not flat."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write MJPG video here")
    w, h = size
    texture = rng.integers(-12, 13, (h, w, 3))
    for frames, level in segments:
        for i in range(frames):
            image = np.clip(level + texture + (i % 7) - 3, 0, 255).astype(np.uint8)
            writer.write(image)
    writer.release()
    return path


def dark_bright_dark(path: str | Path, dark: int = 64, bright: int = 64, after: int = 64, **kw) -> Path:
    """Dark, then a bright stretch, then dark again: one alert, over the bright snippets."""
    return write_video(path, [(dark, DARK), (bright, BRIGHT), (after, DARK)], **kw)
