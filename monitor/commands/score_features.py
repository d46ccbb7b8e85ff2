"""run_monitor.py score-features: score one video's precomputed features offline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from monitor.errors import ArgumentError

HELP = "score one video's precomputed features offline (writes [T] float32)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="model bundle directory")
    p.add_argument("--features", type=Path, required=True,
                   help="packed [T, crops + ΣP, F] .npy, or <video>_i3d.npy with _patch{S}_i3d.npy beside it")
    p.add_argument("--out", type=Path, required=True, help="where to write the [T] scores (.npy)")
    p.add_argument("--streaming", action="store_true",
                   help="score as the live monitor does: one snippet at a time over a sliding window")
    p.add_argument("--window", type=int, help="--streaming: snippets per window (default: the bundle's)")
    p.add_argument("--lookahead", type=int, default=0, help="--streaming: snippets of future context (default 0)")
    p.add_argument("--providers", help="execution providers in order, e.g. 'cuda,cpu' (default: best available)")


def run(args: argparse.Namespace) -> int:
    from monitor.model.bundle import Bundle
    from monitor.model.feature_files import load_video_features
    from monitor.model.offline import score_video
    from monitor.model.providers import from_flag

    # Bad input (a bad option, bundle or feature file: ValueErrors) escapes to guarded, which
    # makes it one line, exit code 2 (with --debug, after the traceback).
    if args.window is not None and args.window < 1 or args.lookahead < 0:
        raise ArgumentError("--window must be >= 1 and --lookahead >= 0")
    if args.window is not None and args.lookahead >= args.window:
        raise ArgumentError(f"--lookahead {args.lookahead} must be smaller than --window {args.window}")

    bundle = Bundle(args.model, providers=from_flag(args.providers) if args.providers else None)
    crops, patches = load_video_features(args.features, bundle.manifest)
    if args.streaming:
        from monitor.engine import stream_scores
        scores = stream_scores(bundle, crops, patches, args.window, args.lookahead)
    else:
        scores = score_video(bundle, crops, patches)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, scores)
    mode = f"streaming, window {args.window or bundle.manifest.window}, look-ahead {args.lookahead}" \
        if args.streaming else "offline"
    print(f"{args.features.name}: {len(scores)} snippets scored ({mode}) on {bundle.providers[0]}, "
          f"max {scores.max():.4f}, wrote {args.out}", file=sys.stderr)
    return 0
