"""The real GStreamer RTSP server of tests/live_rtsp_server.py, started from a test: run with
the system Python (python3-gi and gir1.2-gst-rtsp-server-1.0 live there)."""
from __future__ import annotations

import functools
import shutil
import subprocess
import time

import pytest

from tests.live_helpers import ROOT, Process

SYSTEM_PYTHON = "/usr/bin/python3"


@functools.lru_cache(maxsize=None)
def have_gst_rtsp() -> bool:
    if not shutil.which(SYSTEM_PYTHON):
        return False
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in ('videotestsrc', 'jpegenc', 'rtpjpegpay'))")
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


needs_gst_rtsp = pytest.mark.skipif(not have_gst_rtsp(), reason="GStreamer RTSP server (python3-gi, "
                                    "gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good) not installed")


def rtsp_server(workdir, port: int, name: str, size: str = "128x96", pattern: str = "ball",
                login: str | None = None) -> Process:
    """Start the server at rtsp://127.0.0.1:PORT/test and wait until it listens; with
    login "USER:PASSWORD" only that user may play it."""
    args = [str(ROOT / "tests" / "live_rtsp_server.py"), str(port), pattern, size] + ([login] if login else [])
    server = Process(args, workdir, name, python=SYSTEM_PYTHON)
    deadline = time.monotonic() + 60
    while "ready" not in server.stdout():
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"RTSP server did not start: {server.stderr()}")
        time.sleep(0.05)
    return server
