"""The backbone alone: clips per second on the batch the engine runs for this many cameras
(one snippet each: its crops and patches), the GFLOP/s that makes by the graph's own count of
multiply-adds (monitor.capacity.flops), and that as a fraction of the machine's peak."""
from __future__ import annotations

import onnx

from monitor.capacity.context import Bench, best_seconds, side_by_side
from monitor.capacity.flops import graph_flops

KEYS = {
    "backbone_clips_per_s": "backbone clips (crops and patches) per second, batch of one snippet per camera "
                            "(one such batch per engine worker at once)",
    "backbone_ms_per_snippet": "backbone time per snippet in that batch (ms)",
    "backbone_gflops": "achieved GFLOP/s: the graph's counted Conv/MatMul/Gemm FLOPs over the time",
    "backbone_fraction_of_peak": "backbone_gflops / machine_peak_gflops",
}


def calls(bench: Bench, snippets: int) -> list:
    """The backbone inputs of one engine batch of `snippets` snippets, one array per call, as
    the engine's own batching makes them (this runs the batch once: a warm-up too)."""
    from monitor.engine import fused_features
    inputs = []

    def run(graph, *args):
        if graph == bench.bundle.backbone:
            inputs.append(args[0])
        return graph(*args)

    fused_features(bench.bundle, bench.prepared(snippets), run)
    return inputs


def measure(bench: Bench) -> dict:
    import numpy as np
    n = bench.batch()
    inputs = calls(bench, n)
    bundle = bench.bundle
    model = onnx.load(str(bundle.path / bundle.manifest.graphs["backbone"].file), load_external_data=False)
    runs = bundle.workers  # the engine's workers, each with a batch of its own
    flops = runs * sum(graph_flops(model, list(x.shape)) for x in inputs)
    clips = runs * sum(len(x) for x in inputs)
    seconds = best_seconds(side_by_side(lambda: [bundle.backbone(x) for x in inputs], runs),
                           budget_s=min(5.0, bench.seconds / 3))
    peak = bench.results.get("machine_peak_gflops") or float("nan")
    gflops = flops / seconds / 1e9
    bench.results["_backbone_inputs"] = inputs  # for the PyTorch comparison: the same inputs
    return {"backbone_clips_per_s": round(clips / seconds, 1), "backbone_ms_per_snippet": round(seconds / (n * runs) * 1e3, 2),
            "backbone_gflops": round(gflops, 1),
            "backbone_fraction_of_peak": round(gflops / peak, 3) if np.isfinite(peak) else None,
            "backbone_gflop_per_snippet": round(flops / (n * runs) / 1e9, 3), "batch_snippets": n}


KEYS.update({"backbone_gflop_per_snippet": "counted GFLOP per snippet (all its clips)",
             "batch_snippets": "snippets per backbone call in these measurements"})
