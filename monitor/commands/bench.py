"""run_monitor.py bench: what this machine does with a bundle, measured in one run on the same
weights and inputs (monitor/capacity): the machine's peak, the backbone against it and against
PyTorch, the heads, preprocessing, the engine against the inference bound, latency at 25 fps,
and how many 25 fps cameras it holds. A table, or one JSON object with --json."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HELP = "measure this machine with a bundle: backbone vs peak, engine vs inference bound, cameras at 25 fps"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model bundle with a backbone (default: the shipped demo bundle)")
    p.add_argument("--cameras", type=int, default=4, help="N: cameras of the throughput and latency runs (default 4)")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="length of each engine run, and of each try when counting cameras (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--providers", help="execution providers in order, e.g. 'cuda,cpu' (default: best available)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads, one graph run at a time (default: "
                                               "as the monitor runs: on the CPU one run per core, one thread each)")
    p.add_argument("--video", type=Path, action="append", default=[],
                   help="a recording of your own camera for the cameras to play (looped, paced at 25 fps), so that "
                        "decoding and resizing cost what they will on site; repeat for several, or give a folder of "
                        "them (default: synthetic 320 x 240 test videos)")
    p.add_argument("--video-size", help="WIDTHxHEIGHT of the synthetic test videos instead, e.g. 1920x1080")
    p.add_argument("--work", type=Path, help="directory for the synthetic test videos (default: a temporary one)")


def _check(args: argparse.Namespace) -> str | None:
    if args.cameras < 1:
        return f"--cameras {args.cameras}: must be at least 1"
    if args.seconds <= 0:
        return f"--seconds {args.seconds:g}: must be a positive number of seconds"
    if args.threads is not None and args.threads < 1:
        return f"--threads {args.threads}: must be at least 1"
    if args.video and args.video_size:
        return "--video-size: only for the synthetic test videos, not with --video"
    return None


def run(args: argparse.Namespace) -> int:
    from monitor.capacity.context import VIDEO_SIZE, Bench, VideoError, video_size_flag
    from monitor.capacity.registry import MEASUREMENTS
    from monitor.config import DEMO_BUNDLE
    from monitor.errors import ArgumentError, refuse
    from monitor.model.manifest import BundleError
    from monitor.model.providers import ProviderError, from_flag

    problem = _check(args)
    if problem:
        raise ArgumentError(problem)
    try:
        providers = from_flag(args.providers) if args.providers else None
    except ProviderError as exc:
        return refuse(exc, args.debug)
    path = args.model or DEMO_BUNDLE
    size = video_size_flag(args.video_size) if args.video_size else VIDEO_SIZE
    with tempfile.TemporaryDirectory(prefix="ssrl-bench-") as tmp:
        bench = Bench(path, args.work or Path(tmp), cameras=args.cameras, seconds=args.seconds, providers=providers,
                      threads=args.threads, log=lambda line: print(line, file=sys.stderr, flush=True),
                      recordings=args.video, video_size=size)
        try:
            bundle = bench.bundle
        except (BundleError, ValueError) as exc:
            return refuse(exc, args.debug)
        if not bundle.has_backbone or bundle.manifest.stage == 0:
            raise ArgumentError(f"--model {path}: bench needs a bundle with a backbone and an SSRL head")
        try:
            bench.recordings_held()  # before anything is measured: a bad --video is refused at once
        except VideoError as exc:
            return refuse(exc, args.debug)
        m = bundle.manifest
        results = bench.results
        results.update({"model": str(path), "provider": bundle.providers[0], "stage": m.stage, "crops": m.crops,
                        "patches": sum(m.patches), "threads": bundle.threads, "workers": bundle.workers,
                        "cameras": args.cameras,
                        "seconds": args.seconds, **bench.describe_videos()})
        started = time.perf_counter()
        for title, _, measure in MEASUREMENTS:
            bench.log(f"bench: {title} ...")
            results.update(measure(bench))
        results["bench_seconds"] = round(time.perf_counter() - started, 1)
    public = {k: v for k, v in results.items() if not k.startswith("_")}
    if args.json:
        print(json.dumps(public))
    else:
        _table(public)
    return 0


def _table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from monitor.capacity.registry import MEASUREMENTS, SETTINGS_KEYS

    table = Table(title=f"bench: {results['model']} on {results.get('cpu', '?')}", show_lines=False)
    table.add_column("key", style="bold")
    table.add_column("value", justify="right")
    table.add_column("what it is")
    for title, keys in [("settings", SETTINGS_KEYS)] + [(t, k) for t, k, _ in MEASUREMENTS]:
        table.add_section()
        for key, meaning in keys.items():
            if key in results:
                table.add_row(key, _show(results[key]), f"[dim]{meaning}[/]")
    table.add_section()
    table.add_row("bench_seconds", _show(results.get("bench_seconds")), "[dim]how long the bench took (s)[/]")
    Console().print(table)


def _show(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)
