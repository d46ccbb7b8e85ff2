"""What a camera's reader thread spends per snippet before the graphs: decoding its frames (as
a camera reads them: one FFmpeg thread) and the one preprocessing path (16 decoded frames ->
the backbone's input), preprocessing's share of the snippet's whole cost, and the bytes it
hands the backbone. Both grow with the cameras' resolution (bench --video, --video-size)."""
from __future__ import annotations

import time

import cv2

from monitor.capacity.context import Bench
from monitor.engine import prepare_clips

KEYS = {
    "decode_ms_per_frame": "decoding one frame of the cameras' videos, one FFmpeg thread as a camera reads (ms)",
    "preprocess_ms_per_snippet": "16 decoded frames of the cameras' videos -> backbone input, one thread (ms)",
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


def decode_seconds_per_frame(path, frames: int = 48, repeats: int = 3) -> float:
    """The best of `repeats` reads of `frames` frames from the start, per frame, after the open."""
    best = float("inf")
    for _ in range(repeats):
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        t, read = time.perf_counter(), 0
        while read < frames and capture.read()[0]:
            read += 1
        best = min(best, (time.perf_counter() - t) / max(read, 1))
        capture.release()
    return best


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
    decode = sum(decode_seconds_per_frame(path) for path in bench.videos()) / len(bench.videos())
    return {"decode_ms_per_frame": round(decode * 1e3, 3), "preprocess_ms_per_snippet": round(ms, 2),
            "preprocess_fraction": round(ms / (ms + backbone + head), 3),
            "host_bytes_per_snippet": int(nbytes), "backbone_input": f"{m['dtype']} {m['layout']} {m['channels']}"}
