"""A real RTSP stream on loopback (GStreamer's RTSP server, `tests/live_rtsp_server.py`)
scored live by a subprocess of run_monitor.py; the server stopped and started again, and the
monitor recovering on its own. Needs /usr/bin/python3 with python3-gi and
gir1.2-gst-rtsp-server-1.0 (installed by tools/test.sh); skipped, saying so, without them."""
from __future__ import annotations

import pytest

from tests.factories import cached_bundle
from tests.live_helpers import Subscriber, endpoint, free_port, monitor
from tests.rtsp_helpers import needs_gst_rtsp, rtsp_camera, rtsp_config, rtsp_server

pytestmark = [pytest.mark.slow, needs_gst_rtsp]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_stream_scored_live_and_recovers_after_the_server_restarts(tmp_path, transport):
    bundle = cached_bundle()
    port = free_port()
    url = f"rtsp://viewer:s3cret-word@127.0.0.1:{port}/test"  # credentials that must never show
    ep = endpoint()
    config = rtsp_config(tmp_path / "rtsp.toml", "e2e-rtsp", ep, bundle=bundle, cameras=rtsp_camera(
        "gate", port, url=url, stall_timeout_s=2.0, extra=f'transport = "{transport}"\n'))
    server = rtsp_server(tmp_path, port, "rtsp1")
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--config", str(config), "--no-dashboard")
    try:
        sub.wait_for(lambda ms: len(sub.of("score.gate")) >= 3, "live scores from the RTSP stream", process=proc)
        server.terminate()
        down = sub.wait_for(lambda ms: [m for m in sub.of("camera.gate") if m["event"] == "down"],
                            "a camera down event", process=proc)[0]
        scored_before = len(sub.of("score.gate"))
        server = rtsp_server(tmp_path, port, "rtsp2")
        up = sub.wait_for(lambda ms: [m for m in sub.of("camera.gate") if m["event"] == "up"],
                          "a camera up event", process=proc)[0]
        sub.wait_for(lambda ms: len(sub.of("score.gate")) >= scored_before + 3, "scores after the restart",
                     process=proc)
        assert proc.terminate() == 0, proc.stderr()
    finally:
        proc.kill()
        server.kill()
        sub.close()
    assert down["state"] in ("reconnecting", "stalled") and up["state"] == "streaming"
    status = [m for m in sub.of("status") if m["cameras"][0]["state"] == "streaming"]
    assert status and status[-1]["cameras"][0]["snippets_per_s"] > 0
    assert status[-1]["cameras"][0]["source"] == f"rtsp://***@127.0.0.1:{port}/test"
    scores = sub.of("score.gate")
    assert [m["snippet"] for m in scores] == sorted(m["snippet"] for m in scores)
    everything = "".join(frames[1].decode() for _, _, frames in sub.messages) + proc.stderr() + proc.stdout()
    assert "s3cret" not in everything and "viewer" not in everything
