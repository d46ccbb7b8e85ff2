"""Preprocessing time per snippet (16 frames -> 10 crops + 49 patches at the published
geometry) in both resize modes, as uint8 pixels (what a pixel-input bundle takes) and as float
clips, and how far `fast` features drift from `reference` ones on real footage through the
full-size I3D-ResNet50 (seeded weights, on ONNX Runtime). The bundle's own geometry on 320 x
240 video is `run_monitor.py bench`'s preprocess_ms_per_snippet, timed the same way.

    python -m benchmarks.bench_preprocess [--video PATH] [--repeats 5] [--cosine-snippets 1]

The default video is opencv-doc's vtest.avi (768 x 576, a street camera); a synthetic
1920 x 1080 snippet is timed as well, the size of a typical IP camera.
"""
import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from monitor.capacity.preprocessing import seconds_per_snippet
from monitor.video.preprocess import Geometry, Preprocessor

SAMPLE = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def read(path: Path, n: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    if len(frames) < 16:
        raise SystemExit(f"{path}: fewer than 16 decodable frames")
    return np.stack(frames)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def drift(frames: np.ndarray, snippets: int) -> None:
    import torch  # only for the seeded full-size weights

    from export.backbone import export_backbone
    from monitor.model.providers import create_session
    from training.i3d import I3DResNet50

    torch.set_num_threads(2)
    geometry = Geometry()
    with tempfile.TemporaryDirectory() as tmp:
        spec = export_backbone(I3DResNet50().seed_(0), tmp, geometry, 2048)
        session = create_session(str(Path(tmp) / spec.file))
        features = {}
        for mode in ("reference", "fast"):
            pre = Preprocessor(Geometry.from_dict(geometry.to_dict(), resize=mode))
            crops, patches = [], []
            for t in range(snippets):
                c, p = pre.snippet(frames[16 * t:16 * t + 16])
                crops.append(session.run(None, {"clips": c})[0])
                patches.append(np.concatenate([session.run(None, {"clips": p[i:i + 10]})[0] for i in range(0, 49, 10)]))
            features[mode] = np.stack(crops), np.stack(patches)
    for i, name in enumerate(("10 crops", "49 patches")):
        c = cosine(features["fast"][i], features["reference"][i])
        print(f"fast vs reference, full-size seeded I3D, {name}: cosine mean {c.mean():.5f}, min {c.min():.5f} "
              f"({c.size} vectors)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--video", type=Path, default=SAMPLE)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cosine-snippets", type=int, default=1, help="snippets for the feature drift (0: skip)")
    args = p.parse_args()
    frames = read(args.video, max(16, 16 * args.cosine_snippets))
    big = cv2.resize(frames[0], (1920, 1080))
    inputs = {f"{args.video.name} {frames.shape[2]}x{frames.shape[1]}": frames[:16],
              "synthetic 1920x1080": np.repeat(big[None], 16, 0)}
    print("per snippet: 16 BGR frames -> RGB, resize to 340x256, 10 crops of 224 + 49 patches (23, 35, 47) "
          "of 224, float32 [59, 3, 16, 224, 224]")
    for label, snippet in inputs.items():
        for mode in ("fast", "reference"):
            pre = Preprocessor(Geometry(resize=mode))
            for form, prepare in (("uint8 pixels", pre.pixels), ("float clips", pre.snippet)):
                ms = seconds_per_snippet(prepare, [snippet], args.repeats) * 1e3
                print(f"{label:<26} {mode:<9} {form:<13} best {ms:7.1f} ms per snippet")
        crops_only = Preprocessor(Geometry(resize="fast", grids=()))
        print(f"{label:<26} fast, 10 crops only, pixels: best "
              f"{seconds_per_snippet(crops_only.pixels, [snippet], args.repeats) * 1e3:7.1f} ms")
    if args.cosine_snippets:
        drift(frames, args.cosine_snippets)


if __name__ == "__main__":
    main()
