"""Training speed: steps per second of one SSRL training step (forward, loss, backward, Adam)
at the published size, batch B normal + B abnormal videos of 32 segments, F = 2048, 10 crops.
Stage 1 trains every module; stage n (2-4) trains only its new grid, the earlier modules
frozen as staged training runs them. Data comes from memory (the step alone is measured).

    python benchmarks/bench_train.py [--stages 1 4] [--batch 4] [--feature-size 2048] [--steps 5]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # runnable as a plain script

from training.loss import LossWeights
from training.ssrl import SSRL, SSRLConfig
from training.train import _Parts, freeze, new_grid_prefixes, train_step


def bench(stage: int, batch: int, feature_size: int, crops: int, steps: int, warmup: int, device) -> float:
    torch.manual_seed(0)
    model = SSRL(SSRLConfig(stage=stage, crops=crops, feature_size=feature_size)).to(device)
    fresh = new_grid_prefixes(model.config)
    if stage > 1:   # what --init freezes: everything but the new grid
        freeze(model, {n for n, _ in model.named_parameters() if not n.startswith(fresh)})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-3, weight_decay=5e-3)
    rows = crops + sum(model.config.patches)
    x = torch.rand(2 * batch, rows, 32, feature_size, device=device)
    net = _Parts(model)
    for _ in range(warmup):
        train_step(net, model, optimizer, x, LossWeights())
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        train_step(net, model, optimizer, x, LossWeights())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", type=int, nargs="+", default=[1, 4])
    p.add_argument("--batch", type=int, default=4, help="B: the step sees B normal + B abnormal videos")
    p.add_argument("--feature-size", type=int, default=2048)
    p.add_argument("--crops", type=int, default=10)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {args.batch}+{args.batch}, F {args.feature_size}, {args.crops} crops, 32 segments")
    for stage in args.stages:
        rate = bench(stage, args.batch, args.feature_size, args.crops, args.steps, args.warmup, device)
        print(f"stage {stage}: {rate:.3f} steps/s ({1 / rate:.2f} s per step)")


if __name__ == "__main__":
    main()
