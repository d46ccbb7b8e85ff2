"""Small seeded I3D backbones, bundles and real video files for the preprocessing, backbone
and extraction tests. Small geometry and a narrow I3D keep them fast on a 2-core CPU; the
structure and the tensor names are those of the published network."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from export.__main__ import main as export_main
from monitor.video.preprocess import Geometry
from training.i3d import I3DResNet50

# Debian's opencv-doc sample data (installed by .ci/run): real camera footage.
SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")
# Frames 64 x 48, crops 32, patches 16: the smallest geometry the I3D trunk still takes.
SMALL = Geometry(frame_size=(64, 48), crop_size=32, patch_size=16, grids=(23, 35, 47))
SMALL_WIDTH = 4  # F = 32 * 4 = 128


def sample_video(name: str, into: Path) -> Path:
    """A sample video of opencv-doc, decompressed into `into` if Debian shipped it gzipped."""
    plain, packed = SAMPLES / name, SAMPLES / f"{name}.gz"
    if plain.is_file():
        return plain
    if packed.is_file():
        target = into / name
        with gzip.open(packed, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return target
    pytest.skip(f"{plain}: opencv-doc sample videos are not installed (apt-get install opencv-doc)")


def read_frames(path: Path, limit: int | None = None) -> np.ndarray:
    """All decodable frames (BGR uint8 [N, H, W, 3]), as OpenCV decodes them."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames)


def scene(n: int, width: int = 96, height: int = 72, seed: int = 0) -> np.ndarray:
    """A synthetic scene: a colour gradient with a textured block moving across it, BGR uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)
    texture = rng.integers(0, 256, (height // 3, width // 4, 3), dtype=np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for i in range(n):
        top, left = (i * 2) % (height - texture.shape[0]), (i * 3) % (width - texture.shape[1])
        frames[i, top:top + texture.shape[0], left:left + texture.shape[1]] = texture
    return frames


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """An MJPEG .avi written by OpenCV."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def small_backbone(seed: int = 0, width: int = SMALL_WIDTH) -> I3DResNet50:
    return I3DResNet50(width=width).seed_(seed)


def make_bundle(tmp_path: Path, geometry: Geometry = SMALL, seed: int = 0, width: int = SMALL_WIDTH,
                name: str = "bundle") -> tuple[Path, I3DResNet50]:
    """A backbone-only bundle exported by `python -m export --backbone`, and its PyTorch twin."""
    model = small_backbone(seed, width)
    weights = tmp_path / f"i3d_w{width}_s{seed}.pth"
    torch.save(model.state_dict(), weights)
    out = tmp_path / name
    w, h = geometry.frame_size
    assert export_main(["--backbone", str(weights), "--out", str(out), "--frame-size", str(w), str(h),
                        "--crop-size", str(geometry.crop_size), "--patch-size", str(geometry.patch_size),
                        "--crops", str(geometry.crops), "--grids", *map(str, geometry.grids),
                        "--resize", geometry.resize]) == 0
    return out, model


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> tuple[Path, I3DResNet50]:
    """One shared SMALL backbone-only bundle per test module (tests must not modify it)."""
    return make_bundle(tmp_path_factory.mktemp("small_bundle"))


def torch_features(model: I3DResNet50, clips: np.ndarray) -> np.ndarray:
    # One thread: these tiny clips gain nothing from more, and CI shares its 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(clips))).numpy()
    finally:
        torch.set_num_threads(threads)
