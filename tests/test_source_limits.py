"""Reader-side guards with real video: a frame handed back again is told from a new one
(monitor.video.liveness), and frames over max_frame_pixels never reach the snippets."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time

import cv2
import pytest

from monitor.video.liveness import Liveness
from monitor.video.sources import RECONNECTING, STALLED, STREAMING, CameraSource
from tests.factories import DARK, write_video
from tests.live_helpers import free_port
from tests.rtsp_helpers import needs_gst_rtsp, rtsp_server


def _frames(path, n):
    cap = cv2.VideoCapture(str(path))
    out = []
    for _ in range(n):
        ok, image = cap.read()
        assert ok
        out.append((cap.get(cv2.CAP_PROP_POS_MSEC), cap.get(cv2.CAP_PROP_POS_FRAMES), image))
    cap.release()
    return out


def test_a_frame_handed_back_again_is_not_new_but_a_still_picture_with_a_moving_clock_is(tmp_path):
    (ms0, f0, a), (ms1, f1, b), (ms2, f2, c) = _frames(write_video(tmp_path / "v.avi", [(3, DARK)]), 3)
    live = Liveness()
    assert live.fresh(ms0, f0, a) and live.fresh(ms1, f1, b)
    assert not live.fresh(ms1, f1, b.copy())           # the same frame, the same clock: handed back again
    assert live.fresh(ms2, f2, b.copy())                # the same picture, but the stream's clock moved
    assert not live.fresh(None, None, b.copy())         # no clock, the same bytes: not new
    assert live.fresh(None, None, c) and live.repeats == 2


def test_frames_over_max_frame_pixels_are_refused_with_a_reason(tmp_path):
    big = write_video(tmp_path / "big.avi", [(20, DARK)], size=(640, 480))
    frames = []
    source = CameraSource("big", str(big), max_frame_pixels=320 * 240, backoff_initial_s=0.05, backoff_max_s=0.2,
                          on_frame=frames.append).start()
    try:
        deadline = time.monotonic() + 30
        while source.state()[0] != RECONNECTING and time.monotonic() < deadline:
            time.sleep(0.02)
        state, reason, _ = source.state()
    finally:
        source.stop()
        source.join(5)
    assert state == RECONNECTING and "640x480" in reason and "max_frame_pixels" in reason, reason
    # The file says its size when it opens: refused there, before a frame of it was decoded.
    assert "before decoding" in reason and source.refused_frames == 0 and frames == []


def _wait_state(source, want: str, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = source.state()
        if state[0] == want:
            return state
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s: {source.state()}")


@pytest.mark.slow
@needs_gst_rtsp
def test_an_rtsp_stream_too_large_is_refused_before_decoding_retried_and_read_once_it_fits(tmp_path, caplog):
    """A camera (the real GStreamer RTSP server) sending 640x480 to a reader bounded at 320x240:
    refused at open, from the size the stream announces, retried with backoff; back at a size
    within the bound, it is read."""
    port = free_port()
    server = rtsp_server(tmp_path, port, "big", size="640x480")
    frames = []
    source = CameraSource("gate", f"rtsp://127.0.0.1:{port}/test", max_frame_pixels=320 * 240, stall_timeout_s=3.0,
                          backoff_initial_s=0.2, backoff_max_s=0.5, on_frame=frames.append)
    refusals = lambda: [r for r in caplog.records if "before decoding" in r.getMessage()  # noqa: E731
                        and "retrying" in r.getMessage()]
    try:
        with caplog.at_level(logging.WARNING, logger="monitor.video.sources"):
            source.start()
            deadline = time.monotonic() + 60
            while len(refusals()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(refusals()) >= 2, [r.getMessage() for r in caplog.records]  # retried, refused again
            state, reason, _ = source.state()
            assert state == RECONNECTING and frames == [] and source.refused_frames == 0, (state, reason)
            server.kill()
            server = rtsp_server(tmp_path, port, "fits", size="160x120")
            _wait_state(source, STREAMING, "streaming at 160x120")
            deadline = time.monotonic() + 60
            while len(frames) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        source.stop()
        source.join(5)
        server.kill()
    assert "640x480" in reason and "before decoding" in reason and "max_frame_pixels" in reason, reason
    assert len(frames) >= 5 and {f.image.shape[:2] for f in frames} == {(120, 160)}


def _open_when_listening(url: str, timeout: float = 60.0) -> cv2.VideoCapture:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        if cap.isOpened():
            return cap
        cap.release()
        time.sleep(0.2)
    raise AssertionError(f"{url}: never opened")


def _mjpeg_server(port: int) -> subprocess.Popen:
    """ffmpeg serving a moving test picture as MJPEG over HTTP (multipart JPEG, as many IP
    cameras do) to one client: JPEG frames carry no time stamps, so the stream has no clock of
    its own (what OpenCV reports is counted from the frames read)."""
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                             "testsrc2=size=160x120:rate=10", "-f", "mpjpeg", "-listen", "1",
                             f"http://127.0.0.1:{port}/cam.mjpg"], stdin=subprocess.DEVNULL)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
    server.wait(10)


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")
def test_a_live_stream_without_a_clock_is_judged_by_its_pictures(tmp_path):
    """MJPEG over HTTP from a real server (10 fps): no stream clock, only a position counted
    from the frames read at a frame rate FFmpeg assumes, so liveness rests on the pictures. While
    they change it streams, over several stall timeouts, every frame new; paused (SIGSTOP), it
    is stalled."""
    probe_port, port = free_port(), free_port()
    probe = _mjpeg_server(probe_port)
    try:
        cap = _open_when_listening(f"http://127.0.0.1:{probe_port}/cam.mjpg")
        fps, clock = cap.get(cv2.CAP_PROP_FPS), []
        for _ in range(10):
            ok, _image = cap.read()
            assert ok
            clock.append((cap.get(cv2.CAP_PROP_POS_MSEC), cap.get(cv2.CAP_PROP_POS_FRAMES)))
        cap.release()
    finally:
        _stop(probe)
    # No clock of its own (the case under test): the position is the count of frames read.
    assert fps > 0 and all(abs(ms - (n - 1) * 1000.0 / fps) < 1e-6 for ms, n in clock), (fps, clock)

    server = _mjpeg_server(port)
    frames, states = [], set()
    source = CameraSource("door", f"http://127.0.0.1:{port}/cam.mjpg", stall_timeout_s=2.0, backoff_initial_s=0.2,
                          backoff_max_s=0.5, on_frame=frames.append)
    try:
        source.start()
        _wait_state(source, STREAMING, "the MJPEG stream streaming")
        # 60 frames at 10 fps: three stall timeouts of pictures without a clock.
        deadline = time.monotonic() + 120
        while len(frames) < 60 and time.monotonic() < deadline:
            states.add(source.state()[0])
            time.sleep(0.02)
        assert len(frames) >= 60, (len(frames), source.state())
        os.kill(server.pid, signal.SIGSTOP)
        state, reason, _ = _wait_state(source, STALLED, "the paused stream stalled")
    finally:
        source.stop()
        _stop(server)
        source.join(5)
    assert states == {STREAMING}, states         # never taken for stalled while the pictures changed
    assert source.repeated_frames == 0 and "no new frame" in reason, (source.repeated_frames, reason)
