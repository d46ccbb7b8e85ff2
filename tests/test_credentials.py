"""Camera credentials: a real RTSP server that demands a login (GStreamer's, HTTP basic auth)
played by a real run_monitor.py subprocess whose password comes from a file or from the
environment, never from its command line; every output redacted; OpenCV's and FFmpeg's own
log lines kept out of the monitor's log."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.redaction import redact
from tests.factories import cached_bundle
from tests.live_helpers import Subscriber, endpoint, free_port, monitor
from tests.rtsp_helpers import needs_gst_rtsp, rtsp_camera, rtsp_config, rtsp_server

SECRET = "p@ss:w/rd-Zq81"          # '@', ':' and '/' inside: it must be encoded to work at all
WRONG = "wr0ng-Inline77"
API_KEY = "K3yV4lue55"


@pytest.mark.parametrize("text, shown", [
    ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("rtsp://admin:p@ss@word@cam/live", "rtsp://***@cam/live"),                 # '@' inside the password
    ("rtsp://u:a/b@cam/live", "rtsp://***@cam/live"),                           # an unencoded '/'
    ("http://cam/mjpeg?user=bob&pw=1&pwd=2&password=3&passwd=4&ch=1",
     "http://cam/mjpeg?user=***&pw=***&pwd=***&password=***&passwd=***&ch=1"),
    ("http://cam/x?apikey=a&api_key=b&key=c&token=d&secret=e&auth=f&signature=g&sig=h&fps=5",
     "http://cam/x?apikey=***&api_key=***&key=***&token=***&secret=***&auth=***&signature=***&sig=***&fps=5"),
    ("https://cam/x?X-Amz-Signature=abc;access_token=z#frag", "https://cam/x?X-Amz-Signature=***;access_token=***#frag"),
    ("opening rtsp://a:b@h/x failed, mail ops@example.org", "opening rtsp://***@h/x failed, mail ops@example.org"),
    ("/snaps/pw=hunter2.jpg", "/snaps/pw=***"),
    ("/videos/lobby.mp4", "/videos/lobby.mp4"),
    ("rtsp://***@h/x?apikey=***: cannot open", "rtsp://***@h/x?apikey=***: cannot open"),  # twice: the same
    ("synthetic://lobby?seed=3", "synthetic://lobby?seed=3"),
])
def test_redact_hides_userinfo_and_secret_looking_parameters(text, shown):
    assert redact(text) == shown


@pytest.mark.slow
@needs_gst_rtsp
def test_passwords_from_a_file_or_the_environment_play_and_never_show(tmp_path, monkeypatch):
    bundle = cached_bundle()
    port, dead_port, ep = free_port(), free_port(), endpoint()
    password_file = tmp_path / "gate.pw"
    password_file.write_text(SECRET + "\n")
    monkeypatch.setenv("GATE_PW", SECRET)
    cameras = (rtsp_camera("gate", port, extra=f'username = "viewer"\npassword_file = "{password_file}"\n')
               + rtsp_camera("yard", port, url=f"rtsp://viewer:${{GATE_PW}}@127.0.0.1:{port}/test")
               + rtsp_camera("denied", port, stall_timeout_s=2.0,
                             url=f"rtsp://viewer:{WRONG}@127.0.0.1:{port}/test?apikey={API_KEY}")
               + rtsp_camera("dead", dead_port, stall_timeout_s=2.0,
                             url=f"rtsp://admin:{WRONG}@127.0.0.1:{dead_port}/nothing?token={API_KEY}"))
    config = rtsp_config(tmp_path / "creds.toml", "creds", ep, cameras, bundle=bundle)
    server = rtsp_server(tmp_path, port, "rtsp", size="128x96", login=f"viewer:{SECRET}")
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--config", str(config), "--no-dashboard")
    try:
        sub.wait_for(lambda ms: len(sub.of("score.gate")) >= 3 and len(sub.of("score.yard")) >= 3,
                     "scores of both logged-in cameras", process=proc)
        sub.wait_for(lambda ms: {m["camera"] for m in sub.of("camera.") if m["event"] == "down"} >= {"denied", "dead"},
                     "the denied and the dead camera reported down", process=proc)
        cmdline = Path(f"/proc/{proc.proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert proc.terminate() == 0, proc.stderr()
    finally:
        proc.kill()
        server.kill()
        sub.close()
    err, out = proc.stderr(), proc.stdout()
    messages = "".join(frames[1].decode() for _, _, frames in sub.messages)
    for secret in (SECRET, "p%40ss", WRONG, API_KEY):
        assert secret not in cmdline
        assert secret not in err and secret not in out and secret not in messages, secret
    # OpenCV's `[ WARN:0@1.2] global cap_ffmpeg_impl.hpp ...` and FFmpeg's `[tcp @ 0x55...]`
    # lines (a refused connection, a 401) stay out: the monitor says it in its own words.
    assert not re.search(r"\[ ?WARN|\[(tcp|rtsp|mov[^\]]*) @ 0x|cap_ffmpeg", err + out), err[-3000:]
    assert f"dead: rtsp://***@127.0.0.1:{dead_port}/nothing?token=***: cannot open" in err
    status = [m for m in sub.of("status") if len(m["cameras"]) == 4][-1]
    sources = {c["camera"]: c["source"] for c in status["cameras"]}
    assert sources["denied"] == f"rtsp://***@127.0.0.1:{port}/test?apikey=***"
    assert sources["yard"] == f"rtsp://***@127.0.0.1:{port}/test"  # the placeholder's template, redacted
    assert sources["gate"] == f"rtsp://127.0.0.1:{port}/test"
    assert "Traceback" not in err
