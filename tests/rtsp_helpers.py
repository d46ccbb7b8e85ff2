"""The real GStreamer RTSP server of tests/live_rtsp_server.py, started from a test: run with
the system Python (python3-gi and gir1.2-gst-rtsp-server-1.0 live there); and the monitor
configuration the RTSP tests and the soak (tests/soak.py) run it with. The one place either is
written."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path
import subprocess
import time

import pytest

from tests.live_helpers import ROOT, Process, write_config

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


def rtsp_camera(name: str, port: int, *, stall_timeout_s: float = 3.0, backoff_initial_s: float = 0.2,
                backoff_max_s: float = 1.0, url: str | None = None, extra: str = "") -> str:
    """A [[cameras]] table reading the server on `port` (or `url`), with short stall and backoff
    times so that the tests see faults and recoveries quickly."""
    return f"""
[[cameras]]
name = "{name}"
url = "{url or f'rtsp://127.0.0.1:{port}/test'}"
stall_timeout_s = {stall_timeout_s}
backoff_initial_s = {backoff_initial_s}
backoff_max_s = {backoff_max_s}
{extra}"""


def rtsp_config(path: Path, monitor_id: str, endpoint: str, cameras: str, *, bundle=None,
                status_interval: float = 0.5) -> Path:
    """A monitor configuration at `path`: publishing on `endpoint`, its event store beside it,
    status every `status_interval` s, camera events debounced 0.5 s, the bundle given (else the
    shipped demo bundle) and `cameras` (rtsp_camera tables, or any others)."""
    model = f'[model]\npath = "{bundle}"\n' if bundle is not None else ""
    return write_config(path, f"""
[monitor]
id = "{monitor_id}"
status_interval = {status_interval}
camera_debounce_s = 0.5
{model}[publish]
endpoint = "{endpoint}"
[log]
events = "{path.parent / 'events.db'}"
{cameras}""")
