"""Figures for the SSRL head at the published size (F = 2048): export time and bundle size of a
stage-4 checkpoint, and the time of one temporal.onnx window of 32 snippets on ONNX Runtime.

    python benchmarks/bench_head.py [--stage 4] [--window 32] [--repeats 20]
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from export.__main__ import main as export_main
from monitor.model.bundle import Bundle
from training.checkpoint import save_checkpoint
from training.ssrl import SSRL, SSRLConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stage", type=int, default=4)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_checkpoint(SSRL(SSRLConfig(stage=args.stage)), tmp / "ckpt.pkl")
        started = time.perf_counter()
        assert export_main(["--checkpoint", str(tmp / "ckpt.pkl"), "--out", str(tmp / "bundle")]) == 0
        export_s = time.perf_counter() - started
        size = sum(f.stat().st_size for f in (tmp / "bundle").iterdir())
        bundle = Bundle(tmp / "bundle")
        m = bundle.manifest
        window = np.random.default_rng(0).standard_normal((1, args.window, m.crops, m.feature_size), dtype=np.float32)
        bundle.scores(window)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            bundle.scores(window)
            times.append((time.perf_counter() - t) * 1e3)
        if m.stage > 1:
            crops = window[0]
            patches = np.random.default_rng(1).standard_normal((args.window, sum(m.patches), m.feature_size), dtype=np.float32)
            bundle.fuse(crops[:1], patches[:1])
            t = time.perf_counter()
            for i in range(args.window):
                bundle.fuse(crops[i:i + 1], patches[i:i + 1])
            spatial_ms = (time.perf_counter() - t) * 1e3 / args.window
        print(f"stage {m.stage} export: {export_s:.1f} s, bundle {size / 1e6:.1f} MB")
        print(f"temporal.onnx, window {args.window} x {m.crops} crops x {m.feature_size} on {bundle.providers[0]}: "
              f"median {statistics.median(times):.1f} ms (min {min(times):.1f}, n={len(times)})")
        if m.stage > 1:
            print(f"spatial.onnx per snippet: {spatial_ms:.1f} ms")


if __name__ == "__main__":
    main()
