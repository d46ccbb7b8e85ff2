"""The synthetic camera: URL parameters, determinism, and ground truth that matches where
the events were drawn (checked against the same scene rendered without anomalies)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from monitor.video.synthetic import (DEFAULT_URL, KINDS, SMALL_AREA, SyntheticCamera, SyntheticConfig, SyntheticError,
                               record, render)


def test_url_parameters_are_parsed():
    cam = SyntheticCamera.from_url("synthetic://gate?seed=5&rate=4&size=2&fps=10&width=160&height=120"
                                   "&kinds=fire,run&first=3&duration=2&realtime=0&people=3")
    cfg = cam.config
    assert (cfg.name, cfg.seed, cfg.rate, cfg.size, cfg.kinds, cfg.first) == ("gate", 5, 4.0, 2.0, ("fire", "run"), 3.0)
    assert cam.fps == 10.0 and cam.frame_size == (160, 120) and not cfg.realtime
    ok, frame = cam.read()
    assert ok and frame.dtype == np.uint8 and frame.shape == (120, 160, 3)
    assert cam.frame_index == 1
    # duration=2 s at 10 fps: 20 frames, then the stream ends
    frames = [f for f in cam]
    assert len(frames) == 19 and cam.read() == (False, None)
    assert len(cam.ground_truth) == 20
    assert SyntheticConfig.from_url(cfg.to_url()) == cfg


@pytest.mark.parametrize("url, word", [
    ("synthetic://?rate=-1", "rate"),
    ("synthetic://?fps=abc", "fps"),
    ("synthetic://?kinds=run,dance", "kinds"),
    ("synthetic://?width=7", "width"),
    ("synthetic://?colour=red", "colour"),
    ("rtsp://host/stream", "synthetic://"),
])
def test_bad_parameters_are_refused_by_name(url, word):
    with pytest.raises(SyntheticError, match=word):
        SyntheticCamera.from_url(url)


def test_same_seed_same_frames_other_seed_other_scene():
    a, _ = render("synthetic://?seed=3&rate=6&first=1", 40)
    b, _ = render("synthetic://?seed=3&rate=6&first=1", 40)
    c, _ = render("synthetic://?seed=4&rate=6&first=1", 40)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_frames_change_like_video():
    frames, _ = render("synthetic://?seed=2&rate=0", 30)
    step = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert (step > 0.5).all()          # sensor noise and walkers: no frozen frames
    assert (step < 12).all()           # but no cuts: consecutive frames are alike


def test_ground_truth_matches_where_events_are_drawn():
    """Same seed with and without anomalies: every changed pixel lies in a recorded event box,
    every frame labelled anomalous has changed pixels inside an anomalous box, and the frames
    labelled normal have no anomalous part."""
    url = "synthetic://?seed=11&rate=6&first=1&width=320&height=240"
    frames, cam = render(url, 900)
    normal, plain = render(url.replace("rate=6", "rate=0"), 900)
    assert plain.ground_truth.sum() == 0 and not plain.events
    labels = cam.ground_truth
    assert len(labels) == 900 and 0.15 < labels.mean() < 0.8
    changed = np.abs(frames.astype(np.int16) - normal.astype(np.int16)).max(axis=3) > 0
    checked = 0
    for i in range(900):
        parts = cam.boxes(i)
        inside = np.zeros(changed.shape[1:], bool)
        for p in parts:
            x0, y0, x1, y1 = p["box"]
            inside[max(0, y0 - 1):y1 + 2, max(0, x0 - 1):x1 + 2] = True
        assert not (changed[i] & ~inside).any(), f"frame {i}: pixels changed outside the event boxes"
        anomalous = [p for p in parts if p["anomalous"]]
        assert labels[i] == (1 if anomalous else 0)
        for p in anomalous:
            x0, y0, x1, y1 = p["box"]
            if changed[i, y0:y1 + 1, x0:x1 + 1].any():
                checked += 1
    assert checked >= 0.95 * labels.sum()
    summaries = cam.event_summaries()
    assert len(summaries) >= 4
    for e in summaries:
        assert labels[e["start"]] == 1 and labels[e["end"]] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_drawn_and_labelled(kind):
    frames, cam = render(f"synthetic://?seed=1&rate=4&first=1&kinds={kind}", 240)
    summaries = cam.event_summaries()
    assert summaries and all(e["kind"] == kind for e in summaries)
    e = summaries[0]
    assert e["end"] - e["start"] >= 8, "an event lasts at least about half a second"
    assert cam.ground_truth[e["start"]:e["end"] + 1].mean() > 0.9


def test_most_anomalies_are_small_and_size_makes_them_larger():
    _, small = render("synthetic://?seed=2&rate=6&first=1", 1800)
    _, large = render("synthetic://?seed=2&rate=6&first=1&size=3", 1800)
    s = [e["max_area"] for e in small.event_summaries()]
    g = [e["max_area"] for e in large.event_summaries()]
    assert len(s) >= 10
    assert np.mean(np.array(s) <= SMALL_AREA) >= 0.6
    assert np.median(g) > 1.3 * np.median(s)   # people cannot grow past the nearest row; fires, flashes, vehicles do


def test_rate_zero_is_normal_only():
    _, cam = render("synthetic://?seed=9&rate=0", 600)
    assert cam.ground_truth.sum() == 0 and cam.event_summaries() == []


def test_default_url_injects_an_anomaly_early():
    _, cam = render(DEFAULT_URL, int(30 * 15))
    assert cam.ground_truth.sum() > 0
    assert cam.event_summaries()[0]["start"] < 20 * cam.fps


def test_recording_with_ground_truth_beside_it(tmp_path):
    video, gt, events = record("synthetic://?seed=4&rate=6&first=0.5&fps=10&width=160&height=120",
                               tmp_path / "clip.avi", seconds=4)
    labels = np.load(gt)
    meta = json.loads(events.read_text())
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == len(labels) == meta["frames"] == 40
    assert labels.sum() > 0 and meta["events"]
    assert all(int(i) < 40 for i in meta["boxes"])


def test_a_live_camera_keeps_no_history_and_draws_the_same_frames():
    # A live camera runs for days: its past events, labels and boxes must not pile up, and
    # dropping them must not change a seeded draw.
    url = "synthetic://soak?seed=900000077&rate=6&fps=15&width=160&height=120&first=1&realtime=0"
    kept, live = SyntheticCamera.from_url(url), SyntheticCamera.from_url(url, keep_ground_truth=False)
    for _ in range(15 * 60):   # a minute: several events start and finish
        ok_a, a = kept.read()
        ok_b, b = live.read()
        assert ok_a and ok_b and np.array_equal(a, b)
    assert len(kept.event_summaries()) >= 3
    assert live.events == [] and len(live._labels) == 0 and live._boxes == {}
    assert len(live._active) + len(live._pending) <= 3
    with pytest.raises(RuntimeError, match="keeps no ground truth"):
        live.ground_truth
