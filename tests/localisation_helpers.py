"""A bundle that alerts on a bright spot through its patch grids, and videos with a spot at a
known place: the ground truth for the localisation tests.

The backbone is the brightness backbone of tests/factories.py (feature 0 = the clip's mean
pixel in [-1, 1]). The stage-4 head (grids 23, 35, 47) is the brightness head, then set so
that the 2 x 3 grid's branch adds 2 * sum over its patches of relu(patch brightness) to
feature 0 of the crop, and the 3 x 5 and 4 x 7 branches add nothing: dark video (every patch
below 0) scores sigmoid(GAIN * crop brightness), near 0; a bright spot that fills one patch of
the 2 x 3 grid lifts the score near 1, and only occluding that patch brings it down. So the
heat must sit on that patch, and the fusion onto the 4 x 7 grid is exercised (35 and 47 add
zero heat).
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from tests.factories import BRIGHT, DARK, VIDEO_SIZE, brightness_head, build_bundle

SPOT_GAIN = 2.0


def spot_head(feature_size: int = 32, seed: int = 0):
    model = brightness_head(4, feature_size, 1, (23, 35, 47), seed)
    with torch.no_grad():
        # The 2 x 3 grid's relation block passes feature 0 through (its conv_5 adds nothing there).
        bn = model.Aggregate_patch[0].conv_5[2]
        bn.weight[0], bn.bias[0] = 0, 0
        # patch_to_clip channel 0 = relu(feature 0 of the patch at the centre tap), BatchNorm neutral.
        conv, norm = model.patch_to_clip[0][0], model.patch_to_clip[0][2]
        conv.weight[0] = 0
        conv.weight[0, 0, 1, 1] = 1.0
        conv.bias[0] = 0
        norm.running_mean[0], norm.running_var[0], norm.weight[0], norm.bias[0] = 0, 1, 1, 0
        # linear_out row 0 sums channel 0 over the 2 x 3 positions (flattened channel-major).
        linear = model.linear_out[0]
        linear.weight[0] = 0
        linear.weight[0, :6] = SPOT_GAIN
        linear.bias[0] = 0
    return model


@functools.lru_cache(maxsize=None)
def spot_bundle() -> Path:
    """One spot bundle per test session (exporting takes a few seconds)."""
    out = Path(tempfile.mkdtemp(prefix="ssrl-spot-bundle-")) / "bundle"
    return build_bundle(out, head=spot_head(), window=8, threshold=0.5)


# A spot fills one patch of the 2 x 3 grid: (row, column) -> its box on the frame, normalised.
def spot_box(row: int, col: int) -> tuple[float, float, float, float]:
    return (col / 3, row / 2, (col + 1) / 3, (row + 1) / 2)


def spot_video(path: str | Path, segments: list[tuple[int, tuple[int, int] | None]], size=VIDEO_SIZE,
               fps: float = 25.0, seed: int = 0) -> Path:
    """An MJPEG .avi of `segments` [(frames, spot cell (row, col) of the 2 x 3 grid or None)]:
    dark textured frames, with a bright rectangle filling that cell (a pixel inside its edges)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write MJPG video here")
    w, h = size
    texture = rng.integers(-12, 13, (h, w, 3))
    for frames, cell in segments:
        for i in range(frames):
            image = np.clip(DARK + texture + (i % 7) - 3, 0, 255).astype(np.uint8)
            if cell is not None:
                x0, y0, x1, y1 = spot_box(*cell)
                image[int(np.ceil(y0 * h)) + 1:int(y1 * h) - 1, int(np.ceil(x0 * w)) + 1:int(x1 * w) - 1] = BRIGHT
            writer.write(image)
    writer.release()
    return path


def overlaps(a, b) -> bool:
    """Two [x0, y0, x1, y1] boxes share some area."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def read_frames(path) -> list[np.ndarray]:
    """Every frame of a video file, as OpenCV decodes it."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)
