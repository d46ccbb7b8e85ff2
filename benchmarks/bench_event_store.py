"""Figures for the SQLite event store: how long storing one alert event takes (the publisher
waits for it: an alert is on disk, fsynced, before it is sent), how long listing takes, and
how long retention takes to trim a store.

    python benchmarks/bench_event_store.py [--dir DIR] [--events 2000]

--dir puts the store on the disk to measure (default: a temporary directory).
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

from monitor.messages.event_store import EventStore
from monitor.messages.publisher import iso


def alert(seq: int, ts: float) -> dict:
    return {"schema": 1, "monitor": "bench", "seq": seq, "camera": f"cam{seq % 8}", "ts": iso(ts), "type": "alert",
            "event": ("start", "end")[seq % 2], "alert_id": f"cam{seq % 8}-{seq // 2}", "score": 0.93, "peak": 0.93,
            "threshold": 0.5, "off_threshold": 0.4, "snippets": [10, 14], "frames": [160, 239],
            "time": [iso(ts - 5), iso(ts)], "duration_s": 5.0, "model": {"name": "demo", "stage": 4},
            "snapshot": None, "box": [0.1, 0.2, 0.3, 0.4], "heat": [[0.0] * 7 for _ in range(4)]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", type=Path)
    p.add_argument("--events", type=int, default=2000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = EventStore(Path(tmp) / "events.db")
        seq = store.sequence("bench")
        now = time.time() - args.events
        costs = []
        for i in range(args.events):
            message = alert(seq.take(), now + i)
            t0 = time.perf_counter()
            store.record(message)
            costs.append((time.perf_counter() - t0) * 1000)
        costs.sort()
        print(f"record (one alert event, fsynced): median {statistics.median(costs):.2f} ms, "
              f"p99 {costs[int(0.99 * len(costs))]:.2f} ms over {len(costs)} events")
        t0 = time.perf_counter()
        listed = store.events(since=now + args.events / 2)
        print(f"events --since (half the store, {len(listed)} rows): {(time.perf_counter() - t0) * 1000:.1f} ms")
        size = (Path(tmp) / "events.db").stat().st_size
        store.max_mb = size / 4 / 1024 / 1024
        t0 = time.perf_counter()
        deleted = store.apply_retention()
        print(f"retention to a quarter of the size: {deleted} events deleted in "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms")
        store.close()


if __name__ == "__main__":
    main()
