"""Streaming against offline on one video (prints figures; asserts nothing): the snippet
scores of the live sliding window (window W) against the whole video scored at once, and the
live engine against `score-features --streaming` on the same video's features. Throughput,
latency and capacity are `run_monitor.py bench`'s.

    python benchmarks/bench_streaming.py [--model DIR] [--window 32] [--frames 800]

Without --model it builds a small seeded bundle with tests/factories.py (stage 4, 10 crops,
F = 64, 96x72 frames, 64-pixel crops, 32-pixel patches) and a seeded head with real relations.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.engine import prepare_clips, stream_scores  # noqa: E402
from monitor.model.bundle import Bundle  # noqa: E402
from monitor.model.offline import score_video  # noqa: E402
from monitor.video.preprocess import Geometry, Preprocessor  # noqa: E402
from tests.live_helpers import file_scores  # noqa: E402


def small_bundle(out: Path, window: int) -> Path:
    from tests.factories import build_bundle
    from tests.head_helpers import seeded_model
    head = seeded_model(4, feature_size=64, crops=10, seed=7)
    return build_bundle(out, head=head, window=window, crop_size=64, patch_size=32)


def test_video(path: Path, frames: int, fps: float = 25.0) -> Path:
    """A moving, changing scene (a drifting bright block on texture), so features vary."""
    rng = np.random.default_rng(0)
    w, h = 160, 120
    base = rng.integers(30, 90, (h, w, 3)).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for i in range(frames):
        img = base.copy()
        x = int((i * 2) % (w - 30))
        level = 240 if (i // 80) % 3 == 2 else 140
        img[40:80, x:x + 30] = level
        writer.write(img)
    writer.release()
    return path


def video_features(bundle: Bundle, video: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Snippet features of a whole video through the same preprocessing and backbone."""
    pre = Preprocessor(Geometry.from_manifest(bundle.manifest))
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    crops, patches = [], []
    for t in range(len(frames) // 16):
        c, p = prepare_clips(pre, bundle, np.stack(frames[16 * t:16 * t + 16]))
        crops.append(bundle.backbone(c))
        if p is not None:
            patches.append(bundle.backbone(p))
    return np.stack(crops), (np.stack(patches) if patches else None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="bundle with a backbone (default: a small seeded one)")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--frames", type=int, default=800, help="frames of the test video (800 = 50 snippets)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    path = args.model or small_bundle(work / "bundle", args.window)
    bundle = Bundle(path)
    video = test_video(work / "v.avi", args.frames)
    started = time.perf_counter()
    crops, patches = video_features(bundle, video)
    offline = score_video(bundle, crops, patches)
    streaming = stream_scores(bundle, crops, patches, window=args.window)
    diff = np.abs(streaming - offline)
    w = args.window
    print(f"{len(offline)} snippets, window {w}: |streaming - offline| mean {diff.mean():.4f}, max {diff.max():.4f}; "
          f"first {min(w, len(offline))} snippets (window not yet full) mean {diff[:w].mean():.4f}, "
          f"after {diff[w:].mean() if len(diff) > w else 0:.4f}")
    live = file_scores(bundle, video, w)
    k = min(len(live), len(streaming))
    print(f"live engine vs score-features --streaming (same window code): max |diff| "
          f"{np.abs(live[:k] - streaming[:k]).max():.2e} over {k} snippets ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
