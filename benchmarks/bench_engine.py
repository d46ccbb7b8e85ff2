"""Figures of the live engine on this machine (prints them; asserts nothing):

1. throughput: snippets per second scored with 1 and with 4 cameras (unpaced video files, so
   the engine is the bottleneck and every snippet is scored);
2. end-to-end latency: a camera's last frame of a snippet captured -> its score published,
   with paced (live) sources, 1 and 4 cameras;
3. streaming vs offline: one video's snippet scores from the live sliding window (window W)
   against the whole video scored at once, and the live engine against `score-features
   --streaming` on the same video's features.

    python benchmarks/bench_engine.py [--model DIR] [--seconds 20] [--window 32]

Without --model it builds a small seeded bundle with tests/factories.py (stage 4, 10 crops,
F = 64, 96x72 frames, 64-pixel crops, 32-pixel patches) and a seeded head with real relations.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.model.bundle import Bundle  # noqa: E402
from monitor.config import CameraConfig, Config  # noqa: E402
from monitor.engine import Engine, stream_scores  # noqa: E402
from monitor.model.offline import score_video  # noqa: E402
from monitor.video.preprocess import Geometry, Preprocessor  # noqa: E402
from monitor.messages.publisher import Publisher  # noqa: E402


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


def run_engine(bundle: Bundle, videos: list[Path], *, pace: bool, seconds: float | None, window: int,
               max_batch: int = 8) -> dict:
    config = Config()
    config.model.window = window
    config.engine.max_batch = max_batch
    config.log.snapshots = None
    config.cameras = [CameraConfig(url=str(v), name=f"cam{i}", loop=pace, pace=pace) for i, v in enumerate(videos)]
    publisher = Publisher("tcp://127.0.0.1:0", "bench")
    scores: dict[str, list] = {c.name: [] for c in config.cameras}
    publisher.add_listener(lambda t, m: scores[m["camera"]].append(m) if t.startswith("score.") else None)
    engine = Engine(config, bundle, publisher, None)
    engine.warm_up()
    start = time.monotonic()
    engine.start()
    engine.wait(seconds)
    elapsed = time.monotonic() - start
    engine.stop()
    engine.join(2.0)
    publisher.close()
    if engine.error:
        raise engine.error
    lat = [m["latency_ms"] for ms in scores.values() for m in ms[2:]]  # past the start-up transient
    return {"snippets": engine.snippets_scored, "seconds": elapsed, "per_s": engine.snippets_scored / elapsed,
            "latency_median": statistics.median(lat) if lat else float("nan"),
            "latency_p90": float(np.percentile(lat, 90)) if lat else float("nan"),
            "batches": engine.batches, "shared": engine.shared_batches,
            "dropped": sum(c.dropped for c in engine.cameras), "scores": scores,
            "parts": ", ".join(f"{k} {v / max(engine.snippets_scored, 1) * 1000:.0f} ms" for k, v in engine.seconds.items())}


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
    m = bundle.manifest
    for t in range(len(frames) // 16):
        c, p = pre.snippet(np.stack(frames[16 * t:16 * t + 16]))
        crops.append(bundle.backbone(c))
        if m.stage > 1:
            patches.append(bundle.backbone(p))
    return np.stack(crops), (np.stack(patches) if patches else None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="bundle with a backbone (default: a small seeded one)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each live (paced) run")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--frames", type=int, default=800, help="frames per test video (800 = 50 snippets)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    path = args.model or small_bundle(work / "bundle", args.window)
    bundle = Bundle(path)
    m = bundle.manifest
    print(f"bundle {path}: stage {m.stage}, crops {m.crops}, patches {sum(m.patches)}, F {m.feature_size}, "
          f"geometry {m.preprocessing.get('frame_size')} crop {m.preprocessing.get('crop_size')} "
          f"patch {m.preprocessing.get('patch_size')}; {bundle.providers[0]}; window {args.window}")
    videos = [test_video(work / f"v{i}.avi", args.frames) for i in range(4)]

    print("\nthroughput (unpaced files: every snippet scored, the engine is the bottleneck)")
    for n in (1, 4):
        r = run_engine(bundle, videos[:n], pace=False, seconds=None, window=args.window)
        print(f"  {n} camera(s): {r['snippets']} snippets in {r['seconds']:.1f} s = {r['per_s']:.1f} snippets/s "
              f"({r['batches']} batches, {r['shared']} shared by cameras; per snippet: {r['parts']})")

    print(f"\nend-to-end latency (paced at 25 fps, {args.seconds:.0f} s): last frame captured -> score published")
    for n in (1, 4):
        r = run_engine(bundle, videos[:n], pace=True, seconds=args.seconds, window=args.window)
        print(f"  {n} camera(s): median {r['latency_median']:.0f} ms, p90 {r['latency_p90']:.0f} ms, "
              f"{r['per_s']:.2f} snippets/s, {r['dropped']} dropped")

    print("\nstreaming vs offline on one video")
    crops, patches = video_features(bundle, videos[0])
    offline = score_video(bundle, crops, patches)
    streaming = stream_scores(bundle, crops, patches, window=args.window)
    diff = np.abs(streaming - offline)
    print(f"  {len(offline)} snippets, window {args.window}: |streaming - offline| mean {diff.mean():.4f}, "
          f"max {diff.max():.4f}; first {min(args.window, len(offline))} snippets (window not yet full) mean "
          f"{diff[:args.window].mean():.4f}, after {diff[args.window:].mean() if len(diff) > args.window else 0:.4f}")
    live = run_engine(bundle, videos[:1], pace=False, seconds=None, window=args.window)["scores"]["cam0"]
    live_raw = np.array([s["raw_score"] for s in sorted(live, key=lambda s: s["snippet"])], np.float32)
    k = min(len(live_raw), len(streaming))
    print(f"  live engine vs score-features --streaming (same window code): max |diff| "
          f"{np.abs(live_raw[:k] - streaming[:k]).max():.2e} over {k} snippets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
