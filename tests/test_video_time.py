"""A file source runs on the video's own clock (issue 13 §4): frame times, alert times and
durations, positions and the policy's cooldown follow the position in the file, also when
the file is read much faster than real time. Real files, a real run_monitor.py subprocess
with the shipped demo bundle, the real event log. Nothing here asserts on speed."""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from monitor.messages.event_log import read_events
from monitor.video.sources import ENDED, CameraSource
from monitor.video.synthetic import record
from tests.factories import BRIGHT, DARK, write_video
from tests.live_helpers import endpoint, monitor, write_config


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_an_unpaced_file_stamps_frames_with_their_position_in_the_video(tmp_path):
    video = write_video(tmp_path / "v.avi", [(40, DARK), (10, BRIGHT)], fps=20)
    frames = []
    source = CameraSource("v", str(video), on_frame=frames.append)   # not paced: as fast as it decodes
    source.start()
    try:
        deadline = time.monotonic() + 60
        while source.state()[0] != ENDED and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        source.stop()
        source.join(5)
    assert [f.index for f in frames] == list(range(50))
    assert [f.position for f in frames] == [i / 20 for i in range(50)]
    # The clock is the video's: 1/20 s a frame whatever the decoding speed; `received` is the wall clock.
    assert all(f.ts - frames[0].ts == pytest.approx(f.index / 20, abs=1e-6) for f in frames)
    assert all(b.received >= a.received for a, b in zip(frames, frames[1:]))


def test_a_synthetic_recording_scored_unpaced_alerts_once_per_anomaly_at_its_place_in_the_file(tmp_path):
    # Two minutes of the synthetic camera with three large, well-separated anomalies (this seed
    # puts them 35 and 48 s apart): scored unpaced it takes a few seconds of wall time, so a
    # cooldown of 20 s on the wall clock (the old behaviour) swallowed every alert after the first.
    url = "synthetic://?seed=900200003&rate=2&size=3&kinds=fire,flash,vehicle"
    video, _, events_json = record(url, tmp_path / "clip.mp4", 120)
    truth = json.loads(events_json.read_text())
    fps, anomalies = truth["fps"], truth["events"]
    assert len(anomalies) == 3
    ep = endpoint()
    config = write_config(tmp_path / "clip.toml", f"""
[publish]
endpoint = "{ep}"
[log]
events = "{tmp_path / 'events.db'}"
[alerts]
cooldown_s = 20.0
[[cameras]]
name = "clip"
url = "{video}"
""")
    proc = monitor(tmp_path, "--config", str(config), "--no-dashboard")
    assert proc.wait(300) == 0, proc.stderr()
    ends = [e for e in read_events(tmp_path / "events.db") if e["event"] == "end"]

    # One alert per anomaly: each overlaps its anomaly's frames (allowing the snippet after it).
    assert len(ends) == len(anomalies), [e["frames"] for e in ends]
    for alert, anomaly in zip(ends, anomalies):
        first, last = alert["frames"]
        assert first <= anomaly["end"] + 16 and last >= anomaly["start"], (alert["frames"], anomaly)
    # Positions, durations and times are the video's.
    for alert in ends:
        first, last = alert["frames"]
        assert alert["position_s"] == [round(first / fps, 3), round(last / fps, 3)]
        assert alert["duration_s"] == pytest.approx((last - first) / fps, abs=1e-3)
        start, end = (_epoch(t) for t in alert["time"])
        assert end - start == pytest.approx((last - first) / fps, abs=2e-3)
    for a, b in zip(ends, ends[1:]):
        gap = _epoch(b["time"][0]) - _epoch(a["time"][0])
        assert gap == pytest.approx((b["frames"][0] - a["frames"][0]) / fps, abs=2e-3)
