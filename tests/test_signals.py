"""SIGTERM and SIGINT sent to a real run_monitor.py subprocess while it scores (an unpaced
file keeps the graphs busy all the time) with an alert open: a clean exit with the documented
code (0 for SIGTERM, 130 for SIGINT), the open alert ended with reason "shutdown", published
and stored, and no traceback."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.factories import BRIGHT, cached_bundle, write_video
from tests.live_helpers import ROOT, Subscriber, endpoint, monitor

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_inference_stops_cleanly_and_closes_the_open_alert(tmp_path, sig, code):
    video = write_video(tmp_path / "bright.avi", [(1600, BRIGHT)])  # bright all along: one long alert
    ep, store = endpoint(), tmp_path / "events.db"
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--source", f"hall={video}", "--model", str(cached_bundle()), "--publish", ep,
                   "--events", str(store), "--no-dashboard", "--status-interval", "0.5")
    try:
        sub.wait_for(lambda ms: sub.of("alert.hall"), "the alert to start", process=proc)
        sub.wait_for(lambda ms: len(sub.of("score.hall")) >= 3, "scoring to go on",
                     process=proc)
        proc.proc.send_signal(sig)
        assert proc.wait() == code, proc.stderr()
        sub.drain()
    finally:
        proc.kill()
        sub.close()
    err = proc.stderr()
    assert "Traceback" not in err and "stopped;" in err, err[-3000:]
    ends = [m for m in sub.of("alert.hall") if m["event"] == "end"]
    assert ends and ends[-1]["reason"] == "shutdown", sub.of("alert.hall")
    listed = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "events", "--db", str(store), "--json"],
                            capture_output=True, text=True, timeout=60)
    stored = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [e["event"] for e in stored] == ["start", "end"] and stored[-1].get("reason") == "shutdown", listed
