"""The SSRL head, live against recomputed: per new snippet the engine runs the spatial head
once (its fused output is cached in the camera's window) and the temporal head over the
window at the one position it reports (the temporal_at graph); recomputing would run the
spatial head over every snippet of the window again (in one batched call, the fair way to
recompute) and the temporal head at every position."""
from __future__ import annotations

import numpy as np

from monitor.capacity.context import Bench, best_seconds

KEYS = {
    "head_incremental_ms": "spatial head for the new snippet + temporal head at its position of the window (ms)",
    "head_full_window_ms": "spatial head over all W snippets of the window (one call) + temporal at all W (ms)",
    "head_temporal_ms": "temporal head at all W positions of the window (the temporal graph, ms)",
    "head_temporal_at_ms": "temporal head at the newest position only (temporal_at; all W without it, ms)",
    "head_incremental_speedup": "head_full_window_ms / head_incremental_ms",
    "window": "W, the bundle's temporal window (snippets)",
}


def measure(bench: Bench) -> dict:
    bundle = bench.bundle
    m = bundle.manifest
    w = m.window
    # Real features: the backbone's output for the bench's snippets, repeated to fill the window.
    from monitor.capacity.backbone import calls
    inputs = bench.results.get("_backbone_inputs") or calls(bench, bench.batch())
    n = bench.results.get("batch_snippets") or bench.batch()
    features = [bundle.backbone(x) for x in inputs]
    c, p = m.crops, sum(m.patches)
    if m.stage > 1 and len(features) == 1:  # crops and patches in one call
        crops, patches = features[0][: n * c], features[0][n * c:]
    else:
        crops, patches = features[0], (features[1] if m.stage > 1 else None)
    take = np.arange(w) % n
    crops = crops.reshape(n, c, -1)[take]
    patches = None if patches is None else patches.reshape(n, p, -1)[take]
    window = bundle.fuse(crops, patches)[None]  # [1, W, C, F]
    budget = min(2.0, bench.seconds / 8)

    newest = [w - 1]

    def incremental():
        bundle.fuse(crops[-1:], None if patches is None else patches[-1:])
        bundle.scores_at(window, newest)

    def full():
        bundle.fuse(crops, patches)
        bundle.scores(window)

    inc = best_seconds(incremental, budget, at_least=5)
    whole = best_seconds(full, budget, at_least=3)
    temporal = best_seconds(lambda: bundle.scores(window), budget / 2, at_least=3)
    at = best_seconds(lambda: bundle.scores_at(window, newest), budget / 2, at_least=3)
    return {"head_incremental_ms": round(inc * 1e3, 3), "head_full_window_ms": round(whole * 1e3, 3),
            "head_incremental_speedup": round(whole / inc, 1), "head_temporal_ms": round(temporal * 1e3, 3),
            "head_temporal_at_ms": round(at * 1e3, 3), "window": w}
