"""What the embedded dashboard costs the engine (prints figures; asserts nothing).

Runs the live engine on looping, unpaced video files (so the engine is the bottleneck and
scores as fast as it can) and attaches and detaches the dashboard in the pattern off, on,
on, off (`--seconds` each, `--rounds` times) within that one run, so that a drift in the
machine's load hits both alike. Prints snippets per second without and with it, the cost
(each "with" window against the "without" window next to it), and the frames the dashboard
drew per second and the CPU time each took. The dashboard draws into a terminal-like console (ANSI, alternate
screen, WIDTHxHEIGHT) that writes to /dev/null, so drawing is paid for but no terminal
emulator's parsing is (that runs in another process, often on another machine).

    python benchmarks/bench_dashboard.py [--model DIR] [--cameras 4] [--seconds 10] [--rounds 4]
                                         [--refresh 4] [--size 160x48]

Without --model it builds a small seeded bundle with tests/factories.py
(stage 4, 10 crops, F = 64): a small model is the worst case for the dashboard's share.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from monitor.model.bundle import Bundle  # noqa: E402
from monitor.config import CameraConfig, Config  # noqa: E402
from monitor.dashboard.app import attach_dashboard  # noqa: E402
from monitor.engine import Engine  # noqa: E402
from monitor.messages.publisher import Publisher  # noqa: E402

WARM_S = 3.0  # left out of the count: readers filling their queues, first batches


def small_bundle(out: Path) -> Path:
    from tests.factories import build_bundle
    from tests.head_helpers import seeded_model
    return build_bundle(out, head=seeded_model(4, feature_size=64, crops=10, seed=7), window=32,
                        crop_size=64, patch_size=32)


def test_videos(work: Path, n: int) -> list[Path]:
    """Dark with bright stretches, so that alerts come and go while we measure."""
    from tests.factories import BRIGHT, DARK, write_video
    return [write_video(work / f"cam{i}.avi", [(96 + 16 * i, DARK), (64, BRIGHT), (96, DARK)], seed=i)
            for i in range(n)]


def batch_rate(times: list[float]) -> float:
    """Snippets per second from publish times. Snippets are scored in batches, so counting
    them in a window is off by up to a batch at each edge; instead: the snippets of every
    batch after the first, over the time from the first batch to the last."""
    if len(times) < 2:
        return float("nan")
    first = sum(1 for t in times if t - times[0] < 0.02)
    span = times[-1] - times[0]
    return (len(times) - first) / span if span > 0 else float("nan")


def measure(bundle: Bundle, videos: list[Path], seconds: float, rounds: int, refresh: float,
            size: tuple[int, int]) -> list[dict]:
    """One engine run; the dashboard is attached and detached in the pattern off on on off
    (repeated), `seconds` each, so slow changes in the machine's load cancel out."""
    config = Config()
    config.log.snapshots = None
    config.cameras = [CameraConfig(url=str(v), name=f"cam{i}", loop=True, pace=False) for i, v in enumerate(videos)]
    publisher = Publisher("tcp://127.0.0.1:0", "bench")
    scored: list[float] = []   # when each score was published (a list append: the same for both phases)
    publisher.add_listener(lambda topic, msg: scored.append(time.monotonic()) if topic.startswith("score.") else None)
    engine = Engine(config, bundle, publisher, None)
    engine.warm_up()
    devnull = open(os.devnull, "w")
    console = Console(file=devnull, force_terminal=True, color_system="truecolor", width=size[0], height=size[1])
    engine.start()
    time.sleep(WARM_S)
    windows = []
    try:
        for on in [False, True, True, False] * rounds:
            handle = attach_dashboard(publisher, engine.info(), console=console, refresh_hz=refresh,
                                      force=True) if on else None
            i0, t0, cpu0 = len(scored), time.monotonic(), time.process_time()
            time.sleep(seconds)
            t1, cpu1 = time.monotonic(), time.process_time()
            window = {"on": on, "per_s": batch_rate(scored[i0:]),
                      "cpu_per_snippet": (cpu1 - cpu0) / max(1, len(scored) - i0)}
            if handle is not None:
                frames = handle.frames
                handle.stop()
                window.update(fps=frames / (t1 - t0), cpu_ms=handle.cpu_s * 1000 / max(frames, 1),
                              cpu_share=handle.cpu_s / (t1 - t0))
            windows.append(window)
            if engine.error:
                raise engine.error
    finally:
        engine.stop()
        engine.join(2.0)
        engine.close_alerts()  # the alert worker publishes until it is drained: before the socket closes
        publisher.close()
        devnull.close()
    return windows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="bundle with a backbone (default: a small seeded one)")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per window")
    p.add_argument("--rounds", type=int, default=4, help="rounds of four windows (off, on, on, off)")
    p.add_argument("--refresh", type=float, default=4.0, help="dashboard redraws per second")
    p.add_argument("--size", default="160x48", help="terminal size WIDTHxHEIGHT")
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    path = args.model or small_bundle(work / "bundle")
    bundle = Bundle(path)
    videos = test_videos(work, args.cameras)
    m = bundle.manifest
    print(f"bundle {path}: stage {m.stage}, crops {m.crops}, F {m.feature_size}; {bundle.providers[0]}; "
          f"{args.cameras} looping unpaced cameras; {os.cpu_count()} CPUs; dashboard {args.refresh:g} Hz at {args.size}")
    windows = measure(bundle, videos, args.seconds, args.rounds, args.refresh, size)
    for i in range(0, len(windows), 4):
        a, b, c, d = windows[i:i + 4]
        print(f"  round {i // 4 + 1}: without {a['per_s']:.2f} / {d['per_s']:.2f}, with {b['per_s']:.2f} / "
              f"{c['per_s']:.2f} snippets/s; dashboard {b['fps']:.2f} frames/s, {b['cpu_ms']:.1f} ms CPU a frame")
    off = [w["per_s"] for w in windows if not w["on"]]
    on = [w for w in windows if w["on"]]
    # each "with" window against the "without" window beside it
    ratios = [windows[i]["per_s"] / windows[i - 1 if not windows[i - 1]["on"] else i + 1]["per_s"]
              for i in range(len(windows)) if windows[i]["on"]]
    cost = (1 - statistics.median(ratios)) * 100
    cpu_off = statistics.median(w["cpu_per_snippet"] for w in windows if not w["on"])
    cpu_on = statistics.median(w["cpu_per_snippet"] for w in on)
    print(f"median: without {statistics.median(off):.2f}, with {statistics.median(w['per_s'] for w in on):.2f} "
          f"snippets/s; paired cost of the dashboard {cost:+.1f} % of throughput (median of {len(ratios)} pairs)")
    print(f"process CPU time per snippet: without {cpu_off * 1000:.1f} ms, with {cpu_on * 1000:.1f} ms "
          f"({(cpu_on / cpu_off - 1) * 100:+.1f} %); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"dashboard: {statistics.median(w['fps'] for w in on):.2f} frames/s, "
          f"{statistics.median(w['cpu_ms'] for w in on):.1f} ms CPU a frame, "
          f"{statistics.median(w['cpu_share'] for w in on) * 100:.1f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
