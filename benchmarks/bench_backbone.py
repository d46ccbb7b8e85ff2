"""Throughput of the full-size I3D-ResNet50 backbone (seeded weights): clip-crops per second
in ONNX Runtime (backbone.onnx as exported into a bundle) and in PyTorch eager, on the same
batch of [N, 3, 16, 224, 224] clips, plus their agreement.

    python -m benchmarks.bench_backbone [--batch 10] [--repeats 3] [--threads N] [--providers cpu]
    python -m benchmarks.bench_backbone --device cuda      # PyTorch on the GPU as well

One snippet of ten crops is a batch of 10; with 49 patches a snippet is 59 clips.
"""
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from export.backbone import export_backbone
from monitor.video.preprocess import Geometry
from monitor.model.providers import create_session
from training.i3d import I3DResNet50


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (and, for TensorRT, the engine build)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def report(name: str, times: list[float], batch: int) -> None:
    best, median = min(times), statistics.median(times)
    print(f"{name:<32} {batch / median:7.2f} clip-crops/s (median {median * 1e3:8.1f} ms, "
          f"best {best * 1e3:8.1f} ms per batch of {batch})")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=10, help="clips per call (10 = one snippet's ten crops)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both runtimes")
    p.add_argument("--providers", default=None, help="ONNX Runtime providers (default: best available)")
    p.add_argument("--device", default="cpu", help="PyTorch device (cpu or cuda)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = I3DResNet50().seed_(0)
    clips = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 16, 224, 224)).astype(np.float32)
    print(f"I3D-ResNet50, seeded weights, batch {list(clips.shape)}, {args.threads} threads, "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        spec = export_backbone(model, tmp, Geometry(), model.feature_size)
        path = Path(tmp) / spec.file
        print(f"export: {time.perf_counter() - started:.1f} s, backbone.onnx {path.stat().st_size / 1e6:.1f} MB")
        session = create_session(str(path), args.providers, args.threads)
        print(f"ONNX Runtime providers: {', '.join(session.get_providers())}")
        ort_out = {}
        ort_times = timed(lambda: ort_out.setdefault("y", session.run(None, {"clips": clips})[0]), args.repeats)
        report("ONNX Runtime", ort_times, args.batch)

    device = torch.device(args.device)
    model = model.to(device)
    x = torch.from_numpy(clips).to(device)

    def eager():
        with torch.no_grad():
            y = model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return y
    torch_times = timed(eager, args.repeats)
    report(f"PyTorch eager ({device.type})", torch_times, args.batch)
    want = eager().cpu().numpy()
    err = np.abs(ort_out["y"] - want).max() / np.abs(want).max()
    print(f"ONNX Runtime vs PyTorch: max relative difference {err:.2e}")


if __name__ == "__main__":
    main()
