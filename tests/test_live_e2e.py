"""The live monitor end to end: subprocesses of run_monitor.py, real video files, real
ZeroMQ sockets on loopback, the real event log. Nothing here asserts on speed."""
from __future__ import annotations

import time

import cv2
import pytest

from monitor.messages.event_store import read_store
from tests.factories import BRIGHT, DARK, cached_bundle, dark_bright_dark, write_video
from tests.live_helpers import ROOT, Process, Subscriber, endpoint, monitor, write_config

COMMON = ("--no-dashboard", "--status-interval", "0.5", "--log-level", "info")
ENVELOPE = {"schema", "monitor", "seq", "camera", "ts", "type"}
SCORE_FIELDS = {"snippet", "frames", "time", "score", "raw_score", "threshold", "in_alert", "latency_ms", "lookahead"}
ALERT_FIELDS = {"event", "alert_id", "score", "peak", "threshold", "off_threshold", "snippets", "frames", "time",
                "duration_s", "model", "snapshot", "stored", "box", "heat", "located"}
STATUS_FIELDS = {"uptime_s", "model", "dropped_messages", "alerts_today", "cameras", "faults"}
STATUS_CAMERA_FIELDS = {"camera", "state", "input_fps", "snippets_per_s", "processing_fps", "latency_ms", "queue", "dropped_snippets",
                        "score", "threshold", "in_alert", "alerts", "source"}


@pytest.fixture(scope="module")
def bundle():
    return cached_bundle()


def _alerts(sub, event=None, camera=None):
    return [m for m in sub.of("alert.") if (event is None or m["event"] == event)
            and (camera is None or m["camera"] == camera)]


@pytest.mark.slow
def test_file_alert_reaches_a_subscriber_with_every_field(tmp_path, bundle):
    # Paced at 100 fps so the subscriber is connected long before the bright stretch.
    video = dark_bright_dark(tmp_path / "door.avi", dark=128, bright=64, after=64, fps=100)
    ep = endpoint()
    config = write_config(tmp_path / "replay.toml", f"""
[monitor]
id = "e2e-file"
[model]
path = "{bundle}"
[publish]
endpoint = "{ep}"
[log]
events = "{tmp_path / 'events.db'}"
snapshots = "{tmp_path / 'snaps'}"
[alerts]
on = 0.6
off = 0.4
[engine]
max_pending = 64   # paced past real time: a stall of a loaded machine must not drop a snippet asserted on
[[cameras]]
name = "door"
url = "{video}"
pace = true
""")
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--config", str(config), *COMMON)
    try:
        sub.wait_for(lambda ms: _alerts(sub, "end"), "alert end", process=proc)
        assert proc.wait() == 0, proc.stderr()  # the file ends, so does the monitor
        sub.drain()
    finally:
        proc.kill()
        sub.close()

    start, end = _alerts(sub, "start")[0], _alerts(sub, "end")[0]
    for m in (start, end):
        assert ENVELOPE | ALERT_FIELDS <= set(m), set(m)
        assert m["schema"] == 1 and m["monitor"] == "e2e-file" and m["camera"] == "door" and m["type"] == "alert"
        assert m["ts"].endswith("Z") and m["model"] == {"name": "test-brightness-s2", "stage": 2}
        assert m["threshold"] == 0.6 and m["off_threshold"] == 0.4 and m["score"] == m["peak"] > 0.9
    assert start["alert_id"] == end["alert_id"]
    # The bright stretch is frames 128-191: snippets 8-11.
    assert start["snippets"] == [8, 8] and start["frames"] == [128, 143] and start["time"][1] is None
    assert start["duration_s"] == 0
    assert end["snippets"] == [8, 11] and end["frames"] == [128, 191] and end["time"][1] is not None
    assert end["duration_s"] > 0
    assert start["snapshot"] and start["snapshot"].endswith(".jpg")
    snap = cv2.imread(start["snapshot"])
    assert snap is not None and snap.mean() > (DARK + BRIGHT) / 2  # it shows the bright frame

    scores = sub.of("score.door")
    assert scores and all(ENVELOPE | SCORE_FIELDS <= set(m) for m in scores)
    by_snippet = {m["snippet"]: m for m in scores}
    assert by_snippet[9]["in_alert"] and by_snippet[9]["score"] > 0.9
    assert not by_snippet[max(by_snippet)]["in_alert"] and by_snippet[max(by_snippet)]["score"] < 0.1
    assert all(m["latency_ms"] >= 0 and m["lookahead"] == 0 for m in scores)
    assert all(len(frames) == 2 and frames[0].decode() == t for t, _, frames in sub.messages)  # topic, JSON
    seqs = [m["seq"] for _, m, _ in sub.messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    status = sub.of("status")
    assert status and all(STATUS_FIELDS <= set(m) and m["camera"] is None for m in status)
    cams = status[-1]["cameras"]
    assert len(cams) == 1 and STATUS_CAMERA_FIELDS <= set(cams[0]) and cams[0]["alerts"] == 1
    assert status[-1]["alerts_today"] == 1 and status[-1]["model"]["window"] == 8
    assert all(m["faults"] == [] for m in status) and start["stored"] is end["stored"] is True

    # What was published was stored first, seq included.
    logged = read_store(tmp_path / "events.db")
    assert logged == [start, end]


@pytest.mark.slow
def test_sigterm_stops_with_the_event_store_intact(tmp_path, bundle):
    # A looped replay that is bright for a long time: the alert is still open at SIGTERM.
    video = write_video(tmp_path / "hall.avi", [(64, DARK), (256, BRIGHT)], fps=50)
    ep = endpoint()
    events = tmp_path / "events.db"
    sub = Subscriber(ep, topics=("alert.",))
    proc = monitor(tmp_path, "--model", str(bundle), "--source", f"hall={video}", "--loop", "--publish", ep,
                   "--events", str(events), *COMMON)
    try:
        sub.wait_for(lambda ms: _alerts(sub, "start"), "alert start", process=proc)
        assert proc.terminate() == 0, proc.stderr()
    finally:
        proc.kill()
        sub.close()
    logged = read_store(events)  # it opens and reads back whole
    kinds = [e["event"] for e in logged]
    assert kinds and kinds == ["start", "end"] * (len(kinds) // 2)  # every start has its end
    assert logged[-1]["reason"] == "shutdown" and logged[-2]["alert_id"] == logged[-1]["alert_id"]
    assert "stopped;" in proc.stderr()


@pytest.mark.slow
def test_two_cameras_share_backbone_batches(tmp_path, bundle):
    a = dark_bright_dark(tmp_path / "a.avi", dark=64, bright=48, after=32)
    b = write_video(tmp_path / "b.avi", [(96, DARK), (64, BRIGHT)], seed=1)
    events = tmp_path / "events.db"
    # Files that are not paced wait for the engine, so both queues stay full and every
    # snippet is scored: each batch can take snippets of both cameras (one worker: with one per
    # core, two cameras on two workers are a snippet each, side by side).
    proc = monitor(tmp_path, "--model", str(bundle), "--source", f"a={a}", "--source", f"b={b}",
                   "--max-batch", "4", "--workers", "1", "--publish", endpoint(), "--events", str(events), *COMMON)
    assert proc.wait() == 0, proc.stderr()
    summary = [line for line in proc.stderr().splitlines() if "stopped;" in line][0]
    # "stopped; 19 snippets in N batches (mean x, max M snippets per batch, S shared by cameras) ..."
    scored = int(summary.split("stopped; ")[1].split(" snippets")[0])
    shared = int(summary.split("per batch, ")[1].split(" shared")[0])
    assert scored == 9 + 10 and shared >= 1, summary
    logged = read_store(events)
    by_camera = {(e["camera"], e["event"]): e for e in logged}
    assert by_camera[("a", "start")]["snippets"][0] == 4 and by_camera[("a", "end")]["snippets"] == [4, 6]
    assert by_camera[("b", "start")]["snippets"][0] == 6 and by_camera[("b", "end")]["reason"] == "shutdown"


def test_subscribe_reports_a_gap_in_seq(tmp_path):
    from monitor.messages.publisher import Publisher

    ep = endpoint()
    publisher = Publisher(ep, "gap-test")
    sub = Process([str(ROOT / "run_monitor.py"), "subscribe", ep], tmp_path, "subscribe")
    try:
        deadline = time.monotonic() + 60
        while "status" not in sub.stdout() and time.monotonic() < deadline:  # until it hears us
            publisher.publish("status", {"cameras": []})
            time.sleep(0.1)
        publisher.seq += 5  # five messages "lost"
        publisher.publish("alert.door", {"event": "start", "score": 0.9, "threshold": 0.5, "frames": [0, 15]},
                          camera="door")
        while "ALERT START" not in sub.stdout() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sub.terminate()
        publisher.close()
    out = sub.stdout()
    assert "GAP from monitor gap-test: 5 message(s) lost" in out, out
    assert "ALERT START door" in out
    assert "lost messages: gap-test 5" in sub.stderr()


@pytest.mark.slow
def test_broker_relays_two_monitors_to_one_subscriber(tmp_path, bundle):
    front, back = endpoint(), endpoint()
    broker = Process([str(ROOT / "run_monitor.py"), "broker", "--frontend", front, "--backend", back],
                     tmp_path, "broker")
    video = dark_bright_dark(tmp_path / "v.avi", dark=32, bright=32, after=32)
    sub = Subscriber(back, topics=("score.", "status"))
    monitors = [monitor(tmp_path, "--model", str(bundle), "--source", f"cam{i}={video}", "--loop", "--connect", front,
                        "--monitor-id", f"site{i}", "--events", str(tmp_path / f"ev{i}.db"), *COMMON,
                        name=f"monitor{i}") for i in (1, 2)]
    try:
        def both(ms):
            seen = {(m["monitor"], m["camera"]) for t, m, _ in ms if t.startswith("score.")}
            return {("site1", "cam1"), ("site2", "cam2")} <= seen
        sub.wait_for(both, "scores from both monitors through the broker", process=monitors[0])
        for proc in monitors:
            assert proc.terminate() == 0, proc.stderr()
        assert broker.terminate() == 0, broker.stderr()
    finally:
        for proc in (*monitors, broker):
            proc.kill()
        sub.close()
    for site in ("site1", "site2"):
        seqs = [m["seq"] for _, m, _ in sub.messages if m["monitor"] == site]
        assert seqs == sorted(seqs)  # each monitor keeps its own sequence through the broker
    assert "broker: stopped" in broker.stderr()


def test_a_bad_config_stops_the_monitor_naming_file_key_and_reason(tmp_path):
    config = write_config(tmp_path / "bad.toml", "[alerts]\non = 1.5\n")
    proc = monitor(tmp_path, "--config", str(config), "--no-dashboard")
    assert proc.wait() == 2
    err = proc.stderr()
    assert str(config) in err and "'alerts.on'" in err and "[0, 1]" in err


def test_a_backbone_only_bundle_is_refused_by_name(tmp_path):
    """A stage-0 bundle (feature extraction only) has no head to score with."""
    import json
    import shutil
    from monitor.config import DEMO_BUNDLE
    bundle = tmp_path / "backbone-only"
    bundle.mkdir()
    shutil.copy(DEMO_BUNDLE / "backbone.onnx", bundle)
    m = json.loads((DEMO_BUNDLE / "manifest.json").read_text())
    m.update(stage=0, grids=[], patches=[], graphs={"backbone": m["graphs"]["backbone"]})
    (bundle / "manifest.json").write_text(json.dumps(m))
    proc = monitor(tmp_path, "--model", str(bundle), "--no-dashboard", "--duration", "5",
                   "--events", str(tmp_path / "events.db"))
    assert proc.wait() == 2
    err = proc.stderr()
    assert str(bundle) in err and "backbone-only" in err
