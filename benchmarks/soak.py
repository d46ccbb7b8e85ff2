"""The long soak: the faults of tests/test_soak.py repeated on a schedule for as long as asked,
with the monitor's RSS, threads and file descriptors sampled from /proc every 2 s.

    python benchmarks/soak.py --minutes 30 [--cycles 6] [--out soak.json]

Prints the fault table (fault, how it was injected, what the monitor did), alerts stored versus
received by the subscriber that stayed, and RSS after warm-up and at the end."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.soak import soak  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--cycles", type=int, help="rounds of faults (default: one every 5 minutes)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS is taken as the baseline")
    p.add_argument("--out", type=Path, help="also write the samples and faults as JSON")
    args = p.parse_args()
    seconds = args.minutes * 60
    cycles = args.cycles or max(1, int((seconds - args.warmup) // 300))
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        result = soak(Path(tmp), seconds=seconds, warmup_s=args.warmup, cycles=cycles,
                      log=lambda s: print(s, file=sys.stderr, flush=True))
    print(result.table())
    if args.out:
        args.out.write_text(json.dumps({"seconds": result.seconds, "rss_change": result.rss_change(),
                                        "faults": [asdict(f) for f in result.faults],
                                        "samples": [asdict(s) for s in result.samples],
                                        "alerts_stored": result.alerts_stored, "alerts_received": result.alerts_received,
                                        "missing": result.missing, "exit_code": result.exit_code}, indent=1))
    ok = (result.exit_code == 0 and not result.missing and all(f.recovered for f in result.faults))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
