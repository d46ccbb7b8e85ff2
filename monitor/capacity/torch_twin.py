"""ONNX Runtime against PyTorch on the same backbone, weights and inputs: the bundle's graph
as the engine runs it, and training.onnx_twin (the graph's nodes as PyTorch eager ops, its own
weights) in a subprocess, timed in alternating rounds there. Skipped (None) without PyTorch;
the monitor itself never imports torch."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from monitor.capacity.context import Bench

KEYS = {
    "backbone_ort_vs_torch": "PyTorch eager time / ONNX Runtime time, same graph, weights, inputs, the same pieces "
                            "of each batch and the threads of one of the engine's graph runs (None: no PyTorch; a "
                            "full-size backbone: the first 8 clips of each call)",
    "torch_agreement": "largest relative difference of the PyTorch twin's features to ONNX Runtime's",
}
TWIN_CLIPS = 8  # clips per call compared, for a full-size backbone
ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding monitor/ and training/


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("training") is not None


def measure(bench: Bench) -> dict:
    if not torch_available():
        return {"backbone_ort_vs_torch": None, "torch_agreement": None}
    if bench.bundle.precision != "fp32":  # the twin's eager ops are fp32; int8 is measured against its fp32 source
        bench.log(f"PyTorch comparison skipped: the backbone is {bench.bundle.precision}")
        return {"backbone_ort_vs_torch": None, "torch_agreement": None}
    inputs = bench.results.get("_backbone_inputs")
    if inputs is None:
        from monitor.capacity.backbone import calls
        inputs = calls(bench, bench.batch())
    # Each runtime with the threads one of the engine's graph runs has (one each beside the other
    # workers on a CPU, all cores for a large backbone): the comparison is of the layout the
    # monitor runs, and PyTorch could be laid out the same way.
    threads = bench.bundle.threads
    slow = bench.results.get("backbone_ms_per_snippet", 0) > 2000  # a full-size backbone: fewer rounds
    if slow:
        # And fewer clips: PyTorch's activations for a whole I3D snippet (59 clips) beside the
        # bench's own sessions exceed a 24 GB machine. Per clip the work is the same.
        inputs = [x[:TWIN_CLIPS] for x in inputs]
    with tempfile.TemporaryDirectory() as tmp:
        arrays = Path(tmp) / "inputs.npz"
        np.savez(arrays, **{f"call{i}": x for i, x in enumerate(inputs)})
        command = [sys.executable, "-m", "training.onnx_twin", "--bundle", str(bench.bundle.path), "--inputs",
                   str(arrays), "--threads", str(threads), "--repeats", "1" if slow else "5"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        bench.log(f"PyTorch comparison failed: {done.stderr.strip().splitlines()[-1:]}")
        return {"backbone_ort_vs_torch": None, "torch_agreement": None}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"backbone_ort_vs_torch": round(sum(result["torch_s"]) / sum(result["ort_s"]), 2),
            "torch_agreement": float(f"{result['max_relative_difference']:.2e}")}
