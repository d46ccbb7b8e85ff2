"""Faults of a real RTSP camera (GStreamer's RTSP server on loopback) scored by a real
run_monitor.py subprocess: a server paused with SIGSTOP (a stall that keeps the connection
open), resumed with SIGCONT, killed with SIGKILL and started again at another resolution."""
from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest

from tests.factories import cached_bundle
from tests.live_helpers import Subscriber, endpoint, free_port, monitor
from tests.rtsp_helpers import needs_gst_rtsp, rtsp_camera, rtsp_config, rtsp_server

pytestmark = [pytest.mark.slow, needs_gst_rtsp]

STALL_S = 3.0
REPORT_BOUND_S = STALL_S + 5.0   # "within the configured time", with room for a loaded machine


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _config(tmp_path, bundle, ep, port):
    return rtsp_config(tmp_path / "rtsp.toml", "rtsp-faults", ep, rtsp_camera("gate", port, stall_timeout_s=STALL_S),
                       bundle=bundle)


def test_a_paused_server_is_stalled_in_time_nothing_stale_is_scored_and_it_recovers_from_a_kill_at_a_new_size(
        tmp_path):
    bundle = cached_bundle()
    port, ep = free_port(), endpoint()
    server = rtsp_server(tmp_path, port, "rtsp1")
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--config", str(_config(tmp_path, bundle, ep, port)), "--no-dashboard")
    try:
        sub.wait_for(lambda ms: len(sub.of("score.gate")) >= 3, "live scores", process=proc)

        # A stall: the server process stops, its sockets stay open, no frame comes.
        paused_at = time.time()
        os.kill(server.proc.pid, signal.SIGSTOP)

        def stalled(ms):
            seen = [m for m in sub.of("status") if m["cameras"][0]["state"] == "stalled" and _epoch(m["ts"]) > paused_at]
            seen += [m for m in sub.of("camera.gate") if m["event"] == "down" and m["state"] == "stalled"]
            return sorted(seen, key=lambda m: m["ts"])
        first_stalled = sub.wait_for(stalled, "the camera reported stalled", process=proc)[0]
        # Stay paused long enough that repeated (stale) frames would fill several snippets.
        sub.wait_for(lambda ms: time.time() > paused_at + REPORT_BOUND_S, "the pause to last", process=proc)
        resumed_at = time.time()
        os.kill(server.proc.pid, signal.SIGCONT)
        sub.wait_for(lambda ms: [m for m in sub.of("camera.gate") if m["event"] == "up"
                                 and _epoch(m["ts"]) > resumed_at], "the camera back up", process=proc)
        sub.wait_for(lambda ms: len([m for m in sub.of("score.gate") if _epoch(m["time"][0]) > resumed_at]) >= 3,
                     "scores after the resume", process=proc)

        # The server dies and comes back at another resolution.
        server.kill()
        killed_at = time.time()
        sub.wait_for(lambda ms: [m for m in sub.of("camera.gate") if m["event"] == "down"
                                 and _epoch(m["ts"]) > killed_at], "a camera down event after the kill", process=proc)
        server = rtsp_server(tmp_path, port, "rtsp2", size="160x120")
        restarted_at = time.time()
        sub.wait_for(lambda ms: len([m for m in sub.of("score.gate") if _epoch(m["time"][0]) > restarted_at]) >= 3,
                     "scores at the new resolution", process=proc)
        assert proc.terminate() == 0, proc.stderr()
    finally:
        if server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
        proc.kill()
        server.kill()
        sub.close()

    assert _epoch(first_stalled["ts"]) - paused_at <= REPORT_BOUND_S, (first_stalled, paused_at)
    # No snippet holds a frame read during the pause, nor stitches frames from both sides of it:
    # each lies before the pause (frames in flight at the pause get a second) or after the resume.
    for m in sub.of("score.gate"):
        first, last = _epoch(m["time"][0]), _epoch(m["time"][1])
        assert last <= paused_at + 1.0 or first >= resumed_at, (m["time"], paused_at, resumed_at)
    scores = sub.of("score.gate")
    assert [m["snippet"] for m in scores] == sorted(m["snippet"] for m in scores)
    err = proc.stderr()
    assert "resolution changed from 128x96 to 160x120" in err, err[-3000:]
    assert "Traceback" not in err
