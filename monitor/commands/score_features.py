"""run_monitor.py score-features: score one video's precomputed features offline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HELP = "score one video's precomputed features offline (writes [T] float32)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="model bundle directory")
    p.add_argument("--features", type=Path, required=True,
                   help="packed [T, crops + ΣP, F] .npy, or <video>_i3d.npy with _patch{S}_i3d.npy beside it")
    p.add_argument("--out", type=Path, required=True, help="where to write the [T] scores (.npy)")
    p.add_argument("--providers", help="execution providers in order, e.g. 'cuda,cpu' (default: best available)")


def run(args: argparse.Namespace) -> int:
    from monitor.bundle import Bundle
    from monitor.feature_files import FeatureFileError, load_video_features
    from monitor.manifest import BundleError
    from monitor.offline import score_video
    from monitor.providers import ProviderError

    try:
        bundle = Bundle(args.model, providers=args.providers)
        crops, patches = load_video_features(args.features, bundle.manifest)
        scores = score_video(bundle, crops, patches)
    except (BundleError, FeatureFileError, ProviderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, scores)
    print(f"{args.features.name}: {len(scores)} snippets scored on {bundle.providers[0]}, "
          f"max {scores.max():.4f}, wrote {args.out}", file=sys.stderr)
    return 0
