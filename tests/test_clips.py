"""A clip of each alert (issue 13 §3): real monitor processes on real video files, real MP4s
opened again with OpenCV, a folder held under its size budget."""
from __future__ import annotations

import numpy as np
import pytest
import cv2

from monitor.alerts.clips import FrameRing, _Frame
from monitor.config import ConfigError, from_dict
from monitor.messages.event_log import read_events
from tests.factories import BRIGHT, DARK, cached_bundle, write_video
from tests.live_helpers import Subscriber, endpoint, monitor, write_config

FPS = 25.0


def clip_frames(path) -> np.ndarray:
    """Mean brightness of every frame of a video file, as OpenCV decodes it."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    means = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        means.append(frame.mean())
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS, abs=0.5)
    return np.array(means)


def config_for(tmp_path, video, ep, *, pre=2.0, post=3.0, max_mb=100.0, pace=False, cooldown=0.0):
    return write_config(tmp_path / "clips.toml", f"""
[model]
path = "{cached_bundle()}"
[publish]
endpoint = "{ep}"
[log]
events = "{tmp_path / 'events.db'}"
[alerts]
on = 0.6
cooldown_s = {cooldown}
clips = "{tmp_path / 'clips'}"
clip_pre_s = {pre}
clip_post_s = {post}
clips_max_mb = {max_mb}
[[cameras]]
name = "door"
url = "{video}"
pace = {str(pace).lower()}
""")


def test_the_ring_is_bounded_by_seconds_and_by_bytes():
    ring = FrameRing(seconds=2.0, max_bytes=10 * 100)
    for i in range(100):
        ring.push(_Frame(i, i / 10, np.zeros(100, np.uint8)))
    assert len(ring) == 10 and ring.bytes == 1000            # the byte bound: ten frames of 100 B
    ring = FrameRing(seconds=2.0, max_bytes=1 << 20)
    for i in range(100):
        ring.push(_Frame(i, i / 10, np.zeros(100, np.uint8)))
    assert len(ring) == 21 and ring.first_ts == pytest.approx(7.9)   # the time bound: 2 s at 10 fps
    assert ring.fps() == pytest.approx(10.0) and ring.find(95).index == 95 and ring.find(3) is None


def test_clip_settings_are_checked_and_monitor_wide(tmp_path):
    with pytest.raises(ConfigError, match=r"f.toml: key 'alerts.clip_post_s' = -2: must be a number of seconds"):
        from_dict({"alerts": {"clip_post_s": -2}}, "f.toml")
    with pytest.raises(ConfigError, match=r"key 'cameras\[0\].alerts.clips_max_mb': set for the whole monitor"):
        from_dict({"cameras": [{"url": "a.mp4", "alerts": {"clips_max_mb": 5}}]}, "f.toml")
    per_camera = from_dict({"alerts": {"clips": "c"}, "cameras": [{"url": "a.mp4", "alerts": {"clip_pre_s": 9}}]})
    settings = per_camera.alert_settings(per_camera.cameras[0])
    assert settings.clips == "c" and settings.clip_pre_s == 9 and settings.clip_post_s == 5
    assert from_dict({"alerts": {"clips": ""}}).alerts.clips is None
    (tmp_path / "file").write_text("")
    proc = monitor(tmp_path, "--no-dashboard", "--source", "synthetic://", "--clips", str(tmp_path / "file" / "x"),
                   "--publish", endpoint(), "--events", str(tmp_path / "e.db"))
    assert proc.wait() == 2
    assert "clips folder" in proc.stderr() and "Traceback" not in proc.stderr(), proc.stderr()


@pytest.mark.slow
def test_each_alert_gets_a_playable_clip_from_pre_seconds_before_to_post_seconds_after(tmp_path):
    video = write_video(tmp_path / "door.avi", [(150, DARK), (64, BRIGHT), (150, DARK)], fps=FPS)
    ep = endpoint()
    sub = Subscriber(ep, topics=("alert.",))
    proc = monitor(tmp_path, "--config", str(config_for(tmp_path, video, ep, pace=True)), "--no-dashboard")
    try:
        sub.wait_for(lambda ms: sub.of("alert.") and sub.of("alert.")[-1]["event"] == "end", "the alert's end",
                     process=proc)
        assert proc.wait() == 0, proc.stderr()
    finally:
        proc.kill()
        sub.close()
    start, end = sub.of("alert.")
    clip = end["clip"]
    assert clip and clip == start["clip"] and clip.endswith(f"{end['alert_id']}.mp4")
    assert read_events(tmp_path / "events.db")[-1]["clip"] == clip   # stored as published
    assert not list((tmp_path / "clips").glob("*.partial.mp4"))
    means = clip_frames(clip)
    first, last = end["frames"]
    expected_first, expected_last = first - int(2.0 * FPS), last + int(3.0 * FPS)
    assert abs(len(means) - (expected_last - expected_first + 1)) <= 2, (len(means), first, last)
    # The clip is the source's frames from 2 s before the alert: the bright stretch (frames
    # 150-213) starts 150 - expected_first frames in, and is as long as it is in the file.
    bright = np.flatnonzero(means > (DARK + BRIGHT) / 2)
    assert abs(bright[0] - (150 - expected_first)) <= 1 and abs(len(bright) - 64) <= 1, (bright[0], len(bright))


@pytest.mark.slow
def test_the_oldest_clips_go_when_the_folder_passes_its_budget(tmp_path):
    segments = [(40, DARK)]
    for _ in range(4):
        segments += [(32, BRIGHT), (48, DARK)]
    video = write_video(tmp_path / "door.avi", segments, fps=FPS)
    ep = endpoint()
    # Each clip here is a few tens of kB: a 0.06 MB folder holds the newest one or two.
    proc = monitor(tmp_path, "--config", str(config_for(tmp_path, video, ep, pre=1.0, post=1.0, max_mb=0.06)),
                   "--no-dashboard")
    assert proc.wait() == 0, proc.stderr()
    ends = [e for e in read_events(tmp_path / "events.db") if e["event"] == "end"]
    assert len(ends) == 4, ends
    named = [e["clip"] for e in ends]
    kept = sorted((tmp_path / "clips").glob("*.mp4"))
    assert not [p for p in kept if p.name.endswith(".partial.mp4")]
    assert str(kept[-1]) == named[-1] and len(kept) < 4                  # the newest stays, older ones went
    assert [str(p) for p in kept] == named[-len(kept):]                   # and it is the oldest that went
    total = sum(p.stat().st_size for p in kept)
    assert total <= 0.06 * (1 << 20) or len(kept) == 1
    assert "removed" in proc.stderr()
    for p in kept:
        assert len(clip_frames(p)) > 32


@pytest.mark.slow
def test_a_clip_open_when_the_monitor_stops_is_finished_not_left_partial(tmp_path):
    video = write_video(tmp_path / "door.avi", [(100, DARK), (400, BRIGHT)], fps=FPS)
    ep = endpoint()
    sub = Subscriber(ep, topics=("alert.",))
    proc = monitor(tmp_path, "--config", str(config_for(tmp_path, video, ep, pace=True)), "--no-dashboard")
    try:
        sub.wait_for(lambda ms: sub.of("alert."), "the alert's start", process=proc)
        assert proc.terminate() == 0, proc.stderr()
    finally:
        proc.kill()
        sub.close()
    end = [e for e in read_events(tmp_path / "events.db") if e["event"] == "end"][0]
    assert end["reason"] == "shutdown" and end["clip"]
    assert not list((tmp_path / "clips").glob("*.partial.mp4"))
    means = clip_frames(end["clip"])
    assert len(means) > 2 * FPS and means[0] < (DARK + BRIGHT) / 2 < means[-1]   # dark before, bright in it
