"""Pointing accuracy of the alerts' `box` (issue 13 §6) on the synthetic camera against its
ground truth, from seeds the demo recipe never uses.

    python benchmarks/bench_localisation.py [--bundle monitor/demo_bundle] [--videos 40]
        [--seconds 60] [--rate 3] [--jobs 2]

Each video is rendered by the synthetic camera (anomalies injected at `--rate` per minute,
mostly small) and scored as the live engine scores it: 16-frame snippets through the one
preprocessing path and the backbone, the spatial graph, the bundle's sliding window, the alert
policy with the bundle's threshold and minimum duration (cooldown on the video's clock), and
the engine's localisation (monitor.alerts.localisation: CameraLocator, asked only for the
snippets that start or extend an alert). For every alert message it checks the `box` against
the boxes the camera drew for anomalous event parts in the frames that message covers (a
`start`: the snippets of the run that started it; an `end`: every snippet of the alert):

- pointed: the box overlaps (positive area) a true box in those frames;
- hottest cell: the hottest cell of `heat` overlaps a true box (a stricter reading);
- chance: the share of places a box of the same size, put uniformly at random in the frame,
  would overlap a true box (what pointing anywhere would score; the box's size matters), and
  for the hottest cell, the share of the finest grid's cells that overlap a true box;

overall, and on small anomalies (every true box in those frames belongs to an event whose
largest box covers at most 5 % of the frame, monitor.video.synthetic.SMALL_AREA). Alerts with
no anomalous part in their frames are counted apart (false alerts point at nothing). Both
occlusions are measured (`mean`, the monitor's, and `zero`); the live monitor uses `mean`.

`--published-cost` adds what locating one snippet costs at the published size (F = 2048, ten
crops, grids 23 35 47, a window of 32; seeded weights, exported with PyTorch) against scoring
its window once, and the scoring thread's stall per located snippet: before, the scoring thread
located it itself (the whole cost); now it hands it to the alert worker
(monitor.alerts.worker) and goes on scoring windows while the worker locates it (how many it
scores meanwhile is printed too).
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.config import DEMO_BUNDLE, AlertSettings  # noqa: E402
from training.demo import BENCH_SEEDS, CAMERA, SNIPPET  # noqa: E402

# A block of seeds of its own, above the recipe's (they lie below BENCH_SEEDS) and apart
# from benchmarks/bench_demo.py's (from BENCH_SEEDS on).
SEEDS = BENCH_SEEDS + 10_000
OCCLUSIONS = ("mean", "zero")


@dataclass(frozen=True)
class Video:
    seed: int
    seconds: float
    rate: float

    @property
    def url(self) -> str:
        return (f"synthetic://bench?seed={self.seed}&rate={self.rate:g}&first=random&realtime=0"
                f"&duration={self.seconds:g}&fps={CAMERA['fps']:g}&width={CAMERA['width']}&height={CAMERA['height']}")


_worker: dict = {}


def _init(bundle_dir: str) -> None:
    from monitor.alerts.localisation import Localiser
    from monitor.model.bundle import Bundle
    from monitor.video.preprocess import Geometry, Preprocessor
    bundle = Bundle(bundle_dir, providers=["cpu"], threads=1)
    geometry = Geometry.from_manifest(bundle.manifest)
    _worker.update(bundle=bundle, pre=Preprocessor(geometry),
                   localisers={o: Localiser(bundle, geometry.frame_size, occlusion=o) for o in OCCLUSIONS})


def overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def chance(box, truths, rng, tries: int = 2000) -> float:
    """The share of uniformly random placements of a box of this size that overlap a truth."""
    w, h = box[2] - box[0], box[3] - box[1]
    x0 = rng.uniform(0, 1 - w, tries)
    y0 = rng.uniform(0, 1 - h, tries)
    hit = np.zeros(tries, bool)
    for t in truths:
        hit |= (np.minimum(x0 + w, t[2]) > np.maximum(x0, t[0])) & (np.minimum(y0 + h, t[3]) > np.maximum(y0, t[1]))
    return float(hit.mean())


def score_video(video: Video) -> dict:
    """Score one video as the engine does -> its alert messages (per occlusion) and truth."""
    from monitor.alerts.localisation import CameraLocator, SnippetContext
    from monitor.alerts.policy import AlertPolicy, SnippetInfo
    from monitor.engine import SlidingWindow
    from monitor.video.synthetic import SyntheticCamera

    bundle, pre = _worker["bundle"], _worker["pre"]
    m = bundle.manifest
    cam = SyntheticCamera.from_url(video.url)
    settings = AlertSettings().resolved(m.threshold, m.min_snippets)   # the live default policy
    window = SlidingWindow(m.window)
    runs = {o: (AlertPolicy("bench", settings, {}), CameraLocator(loc, settings.min_snippets))
            for o, loc in _worker["localisers"].items()}
    messages = {o: [] for o in OCCLUSIONS}
    calls_before = {o: loc.calls for o, loc in _worker["localisers"].items()}
    fps, index, snippets = cam.fps, 0, 0
    while True:
        frames = [f for f in (cam.read()[1] for _ in range(SNIPPET)) if f is not None]
        if len(frames) < SNIPPET:
            break
        crop_clips, patch_clips = pre.snippet(np.stack(frames))
        crops, patches = bundle.backbone(crop_clips), bundle.backbone(patch_clips)
        step = window.push(bundle.fuse(crops[None], patches[None])[0], index)
        scores = bundle.scores(step.window[None])[0]
        position = len(step.metas) - 1          # no look-ahead: the newest snippet is reported
        raw = float(scores[position])
        first = index * SNIPPET
        info = SnippetInfo(index, first, first + SNIPPET - 1, first / fps, (first + SNIPPET - 1) / fps)
        for occlusion, (policy, locator) in runs.items():
            locator.seen(SnippetContext(step.window, position, crops, patches))
            _, events = policy.update(info, raw, None, locator.where)
            messages[occlusion] += events
        index += 1
        snippets += 1
    for occlusion, (policy, _) in runs.items():
        messages[occlusion] += policy.close("end of video")   # as the monitor ends an open alert
    w, h = cam.frame_size
    truth = {}
    for i in range(cam.frame_index):
        parts = [(b["event"], (b["box"][0] / w, b["box"][1] / h, (b["box"][2] + 1) / w, (b["box"][3] + 1) / h))
                 for b in cam.boxes(i) if b["anomalous"]]
        if parts:
            truth[i] = parts
    small = {e["id"]: e["small"] for e in cam.event_summaries()}
    calls = {o: loc.calls - calls_before[o] for o, loc in _worker["localisers"].items()}
    cells = _worker["localisers"]["mean"].cells
    return {"seed": video.seed, "messages": messages, "truth": truth, "small": small, "events": len(small),
            "snippets": snippets, "calls": calls, "cells": cells}


def judge(result: dict, occlusion: str, rng) -> list[dict]:
    rows = []
    for message in result["messages"][occlusion]:
        first, last = message["frames"]
        parts = [p for i in range(first, last + 1) for p in result["truth"].get(i, [])]
        row = {"event": message["event"], "seed": result["seed"], "true": bool(parts), "box": message["box"]}
        if parts and message["box"] is not None:
            truths = [b for _, b in parts]
            cell = result["cells"][int(np.argmax(message["heat"]))]   # the hottest cell, row-major
            x0, y0, x1, y1 = message["box"]
            row.update(pointed=any(overlaps(message["box"], t) for t in truths),
                       hottest=any(overlaps(cell, t) for t in truths),
                       cell_chance=float(np.mean([any(overlaps(c, t) for t in truths) for c in result["cells"]])),
                       chance=chance(message["box"], truths, rng), area=(x1 - x0) * (y1 - y0),
                       small=all(result["small"].get(e, False) for e, _ in parts))
        elif parts:
            row.update(pointed=False, hottest=False, chance=0.0, cell_chance=0.0, area=0.0,
                       small=all(result["small"].get(e, False) for e, _ in parts))
        rows.append(row)
    return rows


def summarise(rows: list[dict], label: str) -> str:
    if not rows:
        return f"   {label:<22} none"
    pointed = np.mean([r["pointed"] for r in rows])
    hottest = np.mean([r["hottest"] for r in rows])
    chance_ = np.mean([r["chance"] for r in rows])
    cell_chance = np.mean([r["cell_chance"] for r in rows])
    area = np.mean([r["area"] for r in rows])
    return (f"   {label:<20} {len(rows):>4}   pointed {pointed:6.1%} (chance {chance_:5.1%})   "
            f"hottest cell {hottest:6.1%} (chance {cell_chance:5.1%})   box {area:5.1%} of the frame")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=3.0, help="anomalies per minute")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--published-cost", action="store_true", help="also time one located snippet at the published size")
    args = p.parse_args()

    videos = [Video(SEEDS + k, args.seconds, args.rate) for k in range(args.videos)]
    started = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs, _init, (str(args.bundle),)) as pool:
            results = pool.map(score_video, videos, chunksize=1)
    else:
        _init(str(args.bundle))
        results = [score_video(v) for v in videos]
    elapsed = time.perf_counter() - started
    snippets = sum(r["snippets"] for r in results)
    print(f"bundle {args.bundle}; {len(videos)} synthetic videos of {args.seconds:g} s at {args.rate:g} anomalies/min "
          f"(seeds {SEEDS}..{SEEDS + len(videos) - 1}, never used by the demo recipe), "
          f"{sum(r['events'] for r in results)} anomalies; {snippets} snippets scored in {elapsed:.0f} s")
    for occlusion in OCCLUSIONS:
        rng = np.random.default_rng(0)
        rows = [row for r in results for row in judge(r, occlusion, rng)]
        calls = sum(r["calls"][occlusion] for r in results)
        print(f"\nocclusion '{occlusion}'{' (the monitor’s)' if occlusion == 'mean' else ''}: "
              f"{calls} snippets located out of {snippets} scored ({calls / max(snippets, 1):.1%})")
        for event in ("start", "end"):
            mine = [r for r in rows if r["event"] == event]
            true = [r for r in mine if r["true"]]
            print(f"  {event} messages: {len(mine)}, {len(mine) - len(true)} with no anomaly in their frames")
            print(summarise(true, "on an anomaly"))
            print(summarise([r for r in true if r["small"]], "on small anomalies"))
            print(summarise([r for r in true if not r["small"]], "on large anomalies"))
    if args.published_cost:
        published_cost()


def published_cost(repeats: int = 3) -> None:
    """One located snippet against one scored window, at the published size (CPU provider)."""
    import tempfile
    from export.__main__ import main as export_main
    from monitor.alerts.localisation import Localiser, SnippetContext
    from monitor.model.bundle import Bundle
    from tests.head_helpers import seeded_model
    from training.checkpoint import save_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(seeded_model(4, feature_size=2048), Path(tmp) / "ckpt.pkl")
        assert export_main(["--checkpoint", str(Path(tmp) / "ckpt.pkl"), "--out", str(Path(tmp) / "b")]) == 0
        bundle = Bundle(Path(tmp) / "b", providers=["cpu"])
        rng = np.random.default_rng(0)
        m = bundle.manifest
        ctx = SnippetContext(rng.standard_normal((m.window, m.crops, m.feature_size), dtype=np.float32), m.window - 1,
                             rng.standard_normal((m.crops, m.feature_size), dtype=np.float32),
                             rng.standard_normal((sum(m.patches), m.feature_size), dtype=np.float32))
        localiser = Localiser(bundle, (340, 256))
        localiser.heat(ctx)
        bundle.scores(ctx.window[None])
        t = time.perf_counter()
        for _ in range(repeats):
            bundle.scores(ctx.window[None])
        window_s = (time.perf_counter() - t) / repeats
        t = time.perf_counter()
        for _ in range(repeats):
            localiser.heat(ctx)
        locate_s = (time.perf_counter() - t) / repeats
        handover_s, meanwhile = handover_stall(localiser, bundle, ctx, repeats)
    print(f"\npublished size (F 2048, 10 crops, 49 patches, window {m.window}, CPU): one window scored in "
          f"{window_s * 1e3:.0f} ms; one snippet located in {locate_s * 1e3:.0f} ms "
          f"({sum(m.patches) + 1} variants through spatial and temporal)")
    print(f"scoring thread's stall per located snippet: before {locate_s * 1e3:.0f} ms (it located it itself); "
          f"now {handover_s * 1e3:.3f} ms (handed to the alert worker), and it scored {meanwhile:.1f} windows "
          f"while the worker located it")


def handover_stall(localiser, bundle, ctx, repeats: int) -> tuple[float, float]:
    """(seconds the calling thread spends handing one located start to the alert worker, windows
    it scores while the worker locates it), each the mean over `repeats` alerts."""
    from monitor.alerts.worker import AlertWorker
    worker = AlertWorker(localiser, lambda camera, event: None)
    stalls, scored = [], []
    for k in range(repeats):
        t = time.perf_counter()
        worker.start("bench", {"event": "start", "alert_id": f"bench-{k}"}, [ctx], None)
        worker.end("bench", {"event": "end", "alert_id": f"bench-{k}"})
        stalls.append(time.perf_counter() - t)
        n = 0
        while not worker.idle:          # the scoring thread goes on meanwhile
            bundle.scores(ctx.window[None])
            n += 1
        scored.append(n)
    worker.close()
    return float(np.mean(stalls)), float(np.mean(scored))


if __name__ == "__main__":
    main()
