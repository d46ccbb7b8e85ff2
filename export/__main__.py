"""python -m export --checkpoint CKPT [--backbone I3D.pth] --out DIR [--stage N]"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from monitor.manifest import DEFAULT_THRESHOLD, DEFAULT_WINDOW


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description="Export SSRL weights to a model bundle (ONNX + manifest.json).")
    p.add_argument("--checkpoint", type=Path, help="SSRL checkpoint (.pkl/.pth state dict, published or ours)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--stage", type=int, choices=[1, 2, 3, 4], help="expected stage (read from the tensor names when not given)")
    p.add_argument("--grids", type=int, nargs="+", help="grid set, rows·columns (default: 23 35 47)")
    p.add_argument("--crops", type=int, default=10, help="crops per snippet the model was trained on (10 or 1)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="live sliding window, snippets")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="default alert threshold")
    args, rest = p.parse_known_args(argv)
    args.extra = rest
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    if args.checkpoint is None and not any(a.startswith("--backbone") for a in args.extra):
        console.print("[red]error:[/] give --checkpoint (and/or --backbone)")
        return 2
    if args.extra and not any(a.startswith("--backbone") for a in args.extra):
        console.print(f"[red]error:[/] unrecognised arguments: {' '.join(args.extra)}")
        return 2
    from export.bundle_writer import write_bundle
    from training.checkpoint import CheckpointError, load_model

    started = time.perf_counter()
    try:
        with console.status("loading checkpoint"):
            model = load_model(args.checkpoint, stage=args.stage, grids=args.grids, crops=args.crops)
        with console.status(f"exporting stage {model.config.stage} to ONNX"):
            manifest = write_bundle(args.out, model, window=args.window, threshold=args.threshold,
                                    source={"checkpoint": args.checkpoint.name})
    except CheckpointError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    console.print(f"wrote {args.out}: stage {manifest.stage}, grids {manifest.grids}, "
                  f"{len(manifest.graphs)} graphs, {size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
