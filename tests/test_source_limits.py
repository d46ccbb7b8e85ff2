"""Reader-side guards with real video: a frame handed back again is told from a new one
(monitor.video.liveness), and frames over max_frame_pixels never reach the snippets."""
from __future__ import annotations

import time

import cv2

from monitor.video.liveness import Liveness
from monitor.video.sources import RECONNECTING, CameraSource
from tests.factories import DARK, write_video


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
    assert frames == []
