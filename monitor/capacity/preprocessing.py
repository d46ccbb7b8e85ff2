"""The one preprocessing path per snippet (16 decoded frames -> the backbone's input, as the
engine's reader threads run it), its share of the snippet's whole cost, and the bytes it
hands the backbone."""
from __future__ import annotations

import time

from monitor.capacity.context import Bench
from monitor.engine import prepare_clips

KEYS = {
    "preprocess_ms_per_snippet": "16 decoded 320 x 240 frames -> backbone input, one thread (ms)",
    "preprocess_fraction": "preprocess / (preprocess + backbone + head) per snippet, in CPU time (the backbone's "
                           "time per snippet times the cores its runs used)",
    "host_bytes_per_snippet": "bytes of backbone input per snippet (uint8 pixels, or float clips for a float bundle)",
    "backbone_input": "what the backbone takes: dtype, layout, channel order",
}


def seconds_per_snippet(prepare, snippets: list, repeats: int = 3) -> float:
    """Mean over the snippets of the best of `repeats` calls of prepare(frames), after a warm-up."""
    prepare(snippets[0])
    best = []
    for frames in snippets:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            prepare(frames)
            times.append(time.perf_counter() - t)
        best.append(min(times))
    return sum(best) / len(best)


def measure(bench: Bench) -> dict:
    snippets = bench.snippets(max(4, bench.batch()))
    pre, bundle = bench.preprocessor, bench.bundle
    ms = seconds_per_snippet(lambda frames: prepare_clips(pre, bundle, frames), snippets) * 1e3
    nbytes = sum(a.nbytes for a in prepare_clips(pre, bundle, snippets[0]) if a is not None)
    # CPU time: preprocessing is one snippet on one core; the backbone's time per snippet was
    # measured with all its runs' threads busy.
    b = bench.bundle
    backbone = (bench.results.get("backbone_ms_per_snippet") or 0.0) * b.workers * b.threads
    head = (bench.results.get("head_incremental_ms") or 0.0) * b.threads
    m = bundle.manifest.backbone_input
    return {"preprocess_ms_per_snippet": round(ms, 2), "preprocess_fraction": round(ms / (ms + backbone + head), 3),
            "host_bytes_per_snippet": int(nbytes), "backbone_input": f"{m['dtype']} {m['layout']} {m['channels']}"}
