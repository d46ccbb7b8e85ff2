"""A full-size bundle with seeded weights, for `run_monitor.py bench` at the published size:
the I3D-ResNet50 backbone (seeded, not trained: its speed is what matters here) and a
stage-4 SSRL head (F = 2048, 10 crops, grids 23 35 47: 59 clips of 16 x 224 x 224 a snippet),
exported through `python -m export` as a buyer's bundle would be. Prints the export time and
the bundle's size; everything timed at run time is `bench`'s.

    python -m benchmarks.seeded_bundle --out bundles/seeded-i3d [--float-input]
    python run_monitor.py bench --model bundles/seeded-i3d --cameras 1 --seconds 60
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from export.__main__ import main as export_main
from training.checkpoint import save_checkpoint
from training.i3d import I3DResNet50
from training.ssrl import SSRL, SSRLConfig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--stage", type=int, default=4, choices=[1, 2, 3, 4])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float-input", action="store_true", help="keep the float clip input (default: uint8 pixels)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        weights, checkpoint = Path(tmp) / "i3d_seeded.pth", Path(tmp) / "ssrl_seeded.pkl"
        torch.save(I3DResNet50().seed_(args.seed).state_dict(), weights)
        save_checkpoint(SSRL(SSRLConfig(stage=args.stage)), checkpoint)
        started = time.perf_counter()
        code = export_main(["--checkpoint", str(checkpoint), "--backbone", str(weights), "--out", str(args.out)]
                           + ([] if args.float_input else ["--uint8-input"]))
    if code:
        return code
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"seeded stage-{args.stage} bundle with I3D-ResNet50: export {time.perf_counter() - started:.1f} s, "
          f"{size / 1e6:.0f} MB, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
