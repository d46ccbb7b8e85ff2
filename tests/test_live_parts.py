"""The live engine's parts with real things: TOML files, OpenCV video files, ONNX Runtime
sessions of a seeded bundle, ZeroMQ sockets."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from monitor import config as cfgmod
from monitor.alerts.policy import AlertPolicy, SnippetInfo
from monitor.model.bundle import Bundle
from monitor.config import AlertSettings
from monitor.engine import Engine, SlidingWindow, prepare_clips, stream_scores
from monitor.model.offline import score_video
from monitor.messages.publisher import Publisher
from monitor.video.snippets import SnippetAssembler
from monitor.video.sources import RECONNECTING, CameraSource, Frame, redact
from tests.factories import DARK, build_bundle, cached_bundle, write_video
from tests.head_helpers import seeded_features, seeded_model
from tests.i3d_helpers import read_frames
from tests.live_helpers import ROOT, endpoint

# ----------------------------------------------------------------------------- config


def test_config_defaults_and_every_example_in_configs_load():
    c = cfgmod.load(None)
    assert c.publish.endpoint == "tcp://127.0.0.1:5556" and c.model_path() == cfgmod.DEMO_BUNDLE
    assert c.engine.max_batch >= 1 and c.alerts.min_snippets is None and c.cameras == []
    for name in ("default.toml", "webcam.toml", "rtsp-cameras.toml", "file-replay.toml"):
        loaded = cfgmod.load(ROOT / "configs" / name)
        assert loaded.cameras, name


@pytest.mark.parametrize("text, key, reason", [
    ("[alerts]\non = 1.5\n", "'alerts.on'", "[0, 1]"),
    ("[engine]\nmax_batch = 0\n", "'engine.max_batch'", ">= 1"),
    ("[enigne]\nmax_batch = 2\n", "'enigne'", "not a known section"),
    ("[[cameras]]\nurl = 'a.mp4'\ntransport = 'sctp'\n", "'cameras[0].transport'", "tcp, udp"),
    ("[[cameras]]\nname = 'x'\n", "'cameras[0].url'", "missing"),
    ("[[cameras]]\nurl = 'a'\nname = 'x'\n[[cameras]]\nurl = 'b'\nname = 'x'\n", "'cameras[1].name'", "used by"),
    ("[alerts]\non = 0.5\noff = 0.7\n", "'alerts.off'", "must not exceed"),
    ("[monitor]\nstatus_interval = \"2\"\n", "'monitor.status_interval'", "seconds"),
    ("[model\npath = 1\n", "not valid TOML", "line 1"),
])
def test_a_bad_config_names_file_key_and_reason(tmp_path, text, key, reason):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(cfgmod.ConfigError) as info:
        cfgmod.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and key in message and reason in message, message


def test_camera_alert_settings_override_the_global_ones(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[alerts]\non = 0.7\ncooldown_s = 5\n[[cameras]]\nurl = 'a.avi'\n[cameras.alerts]\non = 0.9\n"
                    "[[cameras]]\nurl = 'b.avi'\n")
    c = cfgmod.load(path)
    first, second = (c.alert_settings(cam).resolved(0.5) for cam in c.cameras)
    assert (first.on, first.cooldown_s, second.on) == (0.9, 5.0, 0.7)
    assert first.off == pytest.approx(0.8) and [cam.name for cam in c.cameras] == ["cam0", "cam1"]
    # Unset keys take the bundle's calibration; a configured key wins over it.
    assert first.min_snippets == 1 and c.alert_settings(c.cameras[0]).resolved(0.5, 2).min_snippets == 2
    path.write_text("[alerts]\nmin_snippets = 3\n[[cameras]]\nurl = 'a.avi'\n")
    c = cfgmod.load(path)
    assert c.alert_settings(c.cameras[0]).resolved(0.5, 2).min_snippets == 3


# ----------------------------------------------------------------------------- sources

@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("http://user@cam.local/mjpeg?token=abc123&fps=5", "http://***@cam.local/mjpeg?token=***&fps=5"),
    ("opening rtsp://a:b@h/x failed", "opening rtsp://***@h/x failed"),
    ("/videos/lobby.mp4", "/videos/lobby.mp4"),
])
def test_redact_strips_credentials(url, shown):
    assert redact(url) == shown


def test_a_missing_file_is_retried_with_backoff_until_it_appears(tmp_path):
    path = tmp_path / "late.avi"
    frames = []
    source = CameraSource("late", str(path), stall_timeout_s=5, backoff_initial_s=0.05, backoff_max_s=0.2,
                          on_frame=frames.append).start()
    try:
        deadline = time.monotonic() + 30
        while source.state()[0] != RECONNECTING and time.monotonic() < deadline:
            time.sleep(0.02)
        assert source.state()[0] == RECONNECTING and "no such file" in source.state()[1]
        write_video(tmp_path / "tmp.avi", [(20, DARK)]).rename(path)
        while len(frames) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        source.stop()
        source.join(5)
    assert len(frames) == 20 and [f.index for f in frames] == list(range(20))
    assert all(f.image.shape == (96, 128, 3) for f in frames)
    assert frames[0].ts <= frames[-1].ts


def test_a_paced_file_held_up_now_and_then_keeps_to_its_clock(tmp_path):
    # 25 fps, 8 snippets; the reader is held 400 ms at each snippet's end (a burst of work).
    # A camera's stream would have buffered those frames: the file catches up as it would.
    video = write_video(tmp_path / "paced.avi", [(16 * 8, DARK)], fps=25.0)
    arrived = []

    def on_frame(frame):
        arrived.append(time.monotonic())
        if frame.index % 16 == 15:
            time.sleep(0.4)

    source = CameraSource("paced", str(video), pace=True, on_frame=on_frame).start()
    try:
        deadline = time.monotonic() + 30
        while len(arrived) < 16 * 8 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        source.stop()
        source.join(5)
    assert len(arrived) == 16 * 8
    clock = (16 * 8 - 1) / 25.0  # when the last frame is due, from the first
    late = arrived[-1] - arrived[0] - clock
    # Without catching up, each hold-up beyond three frames' time would be lag kept: 2 s in all;
    # unpaced, the last frame would come seconds early. (The clock starts before the first read,
    # so a slow first decode makes `late` a little negative.)
    assert -0.3 < late < 0.5, f"the last frame came {late:+.2f} s off the file's clock"


def test_snippets_follow_the_stride_and_restart_on_a_gap_or_a_new_resolution():
    asm = SnippetAssembler("c", length=4, stride=2)
    small, large = np.zeros((8, 8, 3), np.uint8), np.zeros((10, 12, 3), np.uint8)
    out = [asm.push(Frame(i, float(i), small)) for i in range(8)]
    got = [s for s in out if s is not None]
    assert len(got) == 1 and (got[0].first_frame, got[0].last_frame) == (0, 6) and got[0].frames.shape == (4, 8, 8, 3)
    assert asm.push(Frame(8, 8.0, small)) is None and asm.push(Frame(10, 10.0, large)) is None  # new size: restart
    out = [asm.push(Frame(i, float(i), large)) for i in range(11, 17)]
    got = [s for s in out if s is not None]
    assert len(got) == 1 and (got[0].first_frame, got[0].last_frame, got[0].index) == (10, 16, 1)
    asm.push(Frame(17, 17.0, large))
    asm.reset()  # a reconnect: the partial snippet is dropped, not stitched
    out = [asm.push(Frame(i, float(i), large)) for i in range(30, 37)]
    assert [(s.first_frame, s.last_frame) for s in out if s is not None] == [(30, 36)]
    # Resized as they come: only the frames the stride takes, and the keyframe kept full size.
    resized = []
    def halve(image):
        resized.append(image)
        return image[::2, ::2]
    out = [asm.push(Frame(i, float(i), np.full((10, 12, 3), i, np.uint8)), halve) for i in range(40, 47)]
    got = [s for s in out if s is not None]
    assert len(got) == 1 and got[0].frames.shape == (4, 5, 6, 3) and len(resized) == 4
    assert got[0].frames[:, 0, 0, 0].tolist() == [40, 42, 44, 46] and got[0].keyframe.shape == (10, 12, 3)
    assert got[0].keyframe[0, 0, 0] == 44  # the middle frame of the snippet (the third of four)


def test_a_camera_holds_its_frames_resized_and_one_full_keyframe_a_snippet(tmp_path):
    # 640 x 480 frames: 16 of them are 14.7 MB a snippet; resized as they come, the bundle's
    # 64 x 64 frames are 0.2 MB, and the keyframe for a snapshot 0.9 MB.
    video = write_video(tmp_path / "big.avi", [(16 * 12, DARK), (16 * 4, 200)], size=(640, 480))
    config = cfgmod.Config()
    config.log.snapshots = str(tmp_path / "snapshots")
    config.engine.max_pending = 2
    config.cameras = [cfgmod.CameraConfig(url=str(video), name="big")]  # a file, unpaced: it waits for room
    publisher = Publisher(endpoint(), "frames")
    engine = Engine(config, Bundle(cached_bundle(), threads=1, workers=1), publisher)
    engine.start()
    try:
        # Reporting held up (as a slow alert path would): the scorer stops taking batches, and
        # the reader fills the queue.
        with engine._reporting:
            started = time.monotonic()
            while time.monotonic() - started < 30:
                with engine._cond:
                    waiting = list(engine.cameras[0].pending)
                if len(waiting) == config.engine.max_pending:
                    break
                time.sleep(0.02)
        assert engine.wait(60), "the file was not scored to the end"
    finally:
        engine.stop()
        engine.join(3.0)
        engine.close_alerts()
        publisher.close()
    assert len(waiting) == config.engine.max_pending, "the queue was never full"
    decoded = read_frames(video)
    pre = engine.preprocessor
    for snippet in waiting:
        frames = np.stack(decoded[snippet.first_frame:snippet.last_frame + 1])
        w, h = pre.geometry.frame_size
        assert snippet.frames.shape == (16, h, w, 3) and (w, h) != (640, 480)
        np.testing.assert_array_equal(snippet.keyframe, frames[8])  # the middle frame, full size
        assert not np.shares_memory(snippet.keyframe, frames)
        # Resized frame by frame as they came, the input is what the snippet's 16 frames give.
        for got, want in zip(snippet.prepared, prepare_clips(pre, engine.bundle, frames)):
            np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- sliding window

@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    """A seeded stage-3 head with real relations (not the brightness one), F = 32, 1 crop."""
    model = seeded_model(3, feature_size=32, crops=1, seed=3)
    out = build_bundle(tmp_path_factory.mktemp("rb") / "bundle", head=model, window=6, crop_size=64, patch_size=64)
    return Bundle(out), seeded_features(model, 20, seed=4)


def test_streaming_with_a_window_as_long_as_the_video_and_full_lookahead_equals_offline(random_bundle):
    bundle, packed = random_bundle
    c = bundle.manifest.crops
    crops, patches = packed[:, :c], packed[:, c:]
    offline = score_video(bundle, crops, patches)
    same = stream_scores(bundle, crops, patches, window=len(packed), lookahead=len(packed) - 1)
    np.testing.assert_allclose(same, offline, rtol=1e-5, atol=1e-6)
    live = stream_scores(bundle, crops, patches, window=6)
    assert not np.isnan(live).any() and not np.allclose(live, offline)  # a short window sees less context
    ahead = stream_scores(bundle, crops, patches, window=6, lookahead=2)
    assert not np.isnan(ahead).any() and not np.allclose(ahead, live)


def test_the_window_reports_each_snippet_once_in_order_even_when_several_share_a_batch():
    window = SlidingWindow(3, lookahead=1)
    steps = [window.push(np.full((1, 4), t, np.float32), t) for t in range(5)]  # five snippets in one batch
    assert [len(s.window) for s in steps] == [1, 2, 3, 3, 3]
    reported = [r for s in steps for r in window.report(s, s.window[:, 0, 0] / 10)]
    # snippet t-1 reported when t arrives, with its own score from that step's window
    assert reported == [(0, 0.0), (1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.3))]
    assert window.flush() == [(4, pytest.approx(0.4))] and window.flush() == []
    with pytest.raises(ValueError, match="look-ahead"):
        SlidingWindow(3, lookahead=3)


def test_score_features_streaming_runs_the_sliding_window(tmp_path, random_bundle):
    bundle, packed = random_bundle
    features = tmp_path / "video.npy"
    np.save(features, packed)
    out = tmp_path / "s.npy"
    run = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "score-features", "--model", str(bundle.path),
                          "--features", str(features), "--out", str(out), "--streaming", "--window", "6"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    c = bundle.manifest.crops
    np.testing.assert_allclose(np.load(out), stream_scores(bundle, packed[:, :c], packed[:, c:], window=6), rtol=1e-6)
    assert "streaming, window 6" in run.stderr


# ----------------------------------------------------------------------------- alerts

def _info(i: int) -> SnippetInfo:
    return SnippetInfo(i, 16 * i, 16 * i + 15, 10.0 + i, 10.5 + i)


def _run(policy: AlertPolicy, scores) -> list[tuple[int, str]]:
    out = []
    for i, s in enumerate(scores):
        for e in policy.update(_info(i), s)[1]:
            out.append((i, e["event"], tuple(e["snippets"])))
    return out


def test_alert_hysteresis_min_duration_cooldown_and_smoothing():
    model = {"name": "m", "stage": 1}
    policy = AlertPolicy("c", AlertSettings(on=0.6, off=0.4, min_snippets=1, cooldown_s=0), model)
    # 0.5 between off and on keeps an alert going; one dip below off ends it.
    assert _run(policy, [0.1, 0.7, 0.5, 0.5, 0.3, 0.5, 0.7]) == [
        (1, "start", (1, 1)), (4, "end", (1, 3)), (6, "start", (6, 6))]
    policy = AlertPolicy("c", AlertSettings(on=0.6, off=0.4, min_snippets=3, cooldown_s=0), model)
    assert _run(policy, [0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.1]) == [(5, "start", (3, 5)), (6, "end", (3, 5))]
    policy = AlertPolicy("c", AlertSettings(on=0.6, off=0.4, min_snippets=1, cooldown_s=2.5), model)
    assert _run(policy, [0.9, 0.1, 0.9, 0.9, 0.9]) == [(0, "start", (0, 0)), (1, "end", (0, 0)), (4, "start", (4, 4))]
    policy = AlertPolicy("c", AlertSettings(on=0.6, off=0.4, min_snippets=1, smoothing=3, cooldown_s=0), model)
    assert _run(policy, [0.0, 0.0, 0.9, 0.9, 0.0, 0.0, 0.0]) == [(3, "start", (3, 3)), (5, "end", (3, 4))]
    assert policy.count == 1 and not policy.in_alert and policy.close() == []


def test_an_alert_records_peak_ranges_times_and_a_snapshot(tmp_path):
    policy = AlertPolicy("door", AlertSettings(on=0.5, off=0.3, min_snippets=1), {"name": "m", "stage": 4}, tmp_path / "snaps")
    frame = np.full((24, 32, 3), 200, np.uint8)
    _, start = policy.update(_info(2), 0.8, frame)
    policy.update(_info(3), 0.95)
    _, end = policy.update(_info(4), 0.1)
    start, end = start[0], end[0]
    assert start["alert_id"] == end["alert_id"] and start["time"][1] is None and start["duration_s"] == 0
    assert end["peak"] == end["score"] == 0.95 and end["frames"] == [32, 63] and end["snippets"] == [2, 3]
    assert end["duration_s"] == pytest.approx(13.5 - 12.0) and end["snapshot"] == start["snapshot"]
    import cv2
    assert cv2.imread(start["snapshot"]).shape == (24, 32, 3)


# ----------------------------------------------------------------------------- publisher

def test_publisher_stamps_messages_feeds_listeners_and_never_blocks_on_a_stuck_subscriber():
    ep = endpoint()
    publisher = Publisher(ep, "unit", high_water_mark=2)
    heard = []
    publisher.add_listener(lambda topic, msg: heard.append((topic, msg)))
    stuck = zmq.Context.instance().socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 2)
    stuck.setsockopt(zmq.RCVBUF, 4096)
    stuck.setsockopt_string(zmq.SUBSCRIBE, "")
    stuck.connect(ep)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the subscription has arrived
            publisher.publish("status", {"cameras": []})
            if stuck.poll(50):
                break
        body = {"payload": "x" * 20000}
        for _ in range(2000):  # never read: the high-water mark and socket buffers fill up
            publisher.publish("score.c", body, camera="c")
        # The stuck subscriber's queue overflows into its own losses; the socket refuses nothing.
        assert publisher.dropped == 0 and publisher.sent == publisher.seq
        seqs = []
        while stuck.poll(500):
            seqs.append(json.loads(stuck.recv_multipart()[1])["seq"])
        assert seqs and seqs[-1] - seqs[0] + 1 > len(seqs)  # it saw a gap in seq: it knows it lost some
    finally:
        stuck.close(0)
        publisher.close()
    topic, msg = heard[-1]
    assert topic == "score.c" and msg["seq"] == publisher.seq - 1 and msg["camera"] == "c" and msg["type"] == "score"
    assert msg["schema"] == 1 and msg["monitor"] == "unit" and msg["ts"].endswith("Z")
    assert [m["seq"] for _, m in heard] == list(range(publisher.seq))


# ----------------------------------------------------------------------------- engine

def test_a_live_camera_that_is_behind_drops_its_oldest_whole_snippets_and_counts_them(tmp_path):
    from monitor.config import CameraConfig, Config

    video = write_video(tmp_path / "v.avi", [(16, DARK)])
    config = Config()
    config.engine.max_pending = 3
    config.cameras = [CameraConfig(url=str(video), name="cam", pace=True)]  # paced: a live source
    publisher = Publisher(endpoint(), "drop-test")
    heard = []
    publisher.add_listener(lambda topic, msg: heard.append(msg))
    try:
        engine = Engine(config, Bundle(cached_bundle()), publisher)
        cam = engine.cameras[0]
        image = np.full((96, 128, 3), DARK, np.uint8)
        for i in range(16 * 10):  # ten snippets arrive while the engine scores nothing
            engine._on_frame(cam, Frame(i, 100.0 + i / 25, image))
        assert [s.index for s in cam.pending] == [7, 8, 9] and cam.dropped == 7
        engine._score(*engine._next_batch())
        status = engine.publish_status()
    finally:
        publisher.close()
    assert [m["snippet"] for m in heard if m["type"] == "score"] == [7, 8, 9]
    assert status["cameras"][0]["dropped_snippets"] == 7 and status["cameras"][0]["queue"] == 0
