"""DashboardState: what the dashboard believes after a sequence of contract messages.

Time is passed explicitly (`now=`), so staleness is tested without sleeping."""
import json

import pytest

from monitor.dashboard.state import DashboardState


class Feed:
    """Builds contract-shaped messages for one monitor and feeds them at chosen times."""

    def __init__(self, state, monitor="box-1"):
        self.state, self.monitor, self.seq = state, monitor, 0

    def send(self, topic, now, camera=None, **fields):
        msg = {"schema": 1, "monitor": self.monitor, "seq": self.seq, "camera": camera,
               "ts": "2026-11-24T20:01:02.345Z", "type": topic.split(".")[0], **fields}
        self.seq += 1
        assert self.state.feed(topic, msg, now=now), self.state.last_error
        return msg

    def status(self, now, cameras, **fields):
        entries = [{"camera": c, "state": "streaming", "input_fps": 25.0, "snippets_per_s": 1.5,
                    "latency_ms": 80.0, "queue": 0, "dropped_snippets": 0, "score": 0.1,
                    "threshold": 0.6, "in_alert": False, "alerts": 0, "source": f"synthetic://{c}"}
                   for c in cameras]
        fields = {"uptime_s": 100.0, "model": {"name": "m", "stage": 3, "providers": ["CPUExecutionProvider"],
                                                "window": 8},
                  "dropped_messages": 0, "alerts_today": 0, "cameras": entries, **fields}
        return self.send("status", now, **fields)

    def score(self, now, camera, score, in_alert=False, threshold=0.6):
        return self.send(f"score.{camera}", now, camera, snippet=0, frames=[0, 15], time=["", ""], score=score,
                         raw_score=score, threshold=threshold, in_alert=in_alert, latency_ms=50.0, lookahead=0)

    def alert(self, now, camera, event, alert_id, peak, duration_s=0.0, **extra):
        return self.send(f"alert.{camera}", now, camera, event=event, alert_id=alert_id, score=peak, peak=peak,
                         threshold=0.6, off_threshold=0.5, snippets=[3, 5], frames=[48, 95],
                         time=["2026-11-24T20:01:02.345Z", None if event == "start" else "2026-11-24T20:01:09.000Z"],
                         duration_s=duration_s, model={"name": "m", "stage": 3}, snapshot=f"/snaps/{alert_id}.jpg",
                         **extra)


def cams(snap):
    return {c.name: c for c in snap.cameras}


def test_status_then_scores_fill_rows_and_history():
    state = DashboardState(stale_after=5, history_s=60)
    feed = Feed(state)
    feed.status(0.0, ["a", "b"], uptime_s=50.0)
    for i in range(10):
        feed.score(1.0 + i, "a", 0.1 * i)
    snap = state.snapshot(now=11.0)
    a, b = cams(snap)["a"], cams(snap)["b"]
    assert a.score == pytest.approx(0.9) and a.threshold == 0.6 and a.latency_ms == 50.0
    assert [round(s, 1) for _, s in a.history] == [round(0.1 * i, 1) for i in range(10)]
    assert a.history[0][0] == pytest.approx(10.0) and a.history[-1][0] == pytest.approx(1.0)  # ages
    assert b.score == pytest.approx(0.1) and len(b.history) == 0   # status gives the value, not history
    assert b.input_fps == 25.0 and b.snippets_per_s == 1.5 and b.state == "streaming"
    assert snap.monitors[0].uptime_s == pytest.approx(61.0)    # 50 at t=0, 11 s later
    assert snap.monitors[0].providers == ("CPUExecutionProvider",)
    # history older than history_s falls off
    feed.score(100.0, "a", 0.5)
    assert [s for _, s in cams(state.snapshot(now=100.0))["a"].history] == [0.5]


def test_alert_start_and_end():
    state = DashboardState(stale_after=5)
    feed = Feed(state)
    feed.status(0.0, ["a", "b"])
    feed.alert(1.0, "a", "start", "a-1", 0.8)
    feed.score(2.0, "a", 0.95, in_alert=True)
    snap = state.snapshot(now=4.0)
    a = cams(snap)["a"]
    assert a.in_alert and a.alerts == 1 and a.alert_for_s == pytest.approx(3.0)
    assert snap.monitors[0].alerts_today == 1
    (alert,) = snap.alerts
    assert alert.active and alert.camera == "a" and alert.peak == 0.8 and alert.duration_s == pytest.approx(3.0)
    assert alert.snapshot == "/snaps/a-1.jpg" and alert.started == "2026-11-24T20:01:02.345Z"

    feed.alert(5.0, "a", "end", "a-1", 0.97, duration_s=4.2)
    feed.alert(6.0, "b", "start", "b-1", 0.7)
    snap = state.snapshot(now=9.0)
    a = cams(snap)["a"]
    assert not a.in_alert and a.alert_for_s is None and a.alerts == 1   # the end does not count again
    newest, older = snap.alerts
    assert newest.alert_id == "b-1" and newest.active
    assert older.alert_id == "a-1" and not older.active
    assert older.peak == 0.97 and older.duration_s == pytest.approx(4.2)  # no longer grows
    assert older.ended == "2026-11-24T20:01:09.000Z" and older.reason == ""
    feed.alert(7.0, "b", "end", "b-1", 0.7, duration_s=1.0, reason="shutdown")
    assert state.snapshot(now=8.0).alerts[0].reason == "shutdown"
    # the next heartbeat is authoritative for the counts
    feed.status(10.0, ["a", "b"], alerts_today=7)
    assert state.snapshot(now=10.0).monitors[0].alerts_today == 7


def test_joining_mid_alert_shows_the_camera_in_alert_from_the_heartbeat():
    state = DashboardState()
    feed = Feed(state)
    msg = feed.status(0.0, ["a"])
    msg["cameras"][0].update(in_alert=True, alerts=3)
    msg["seq"] = feed.seq
    feed.seq += 1
    assert state.feed("status", msg, now=1.0)
    a = cams(state.snapshot(now=2.0))["a"]
    assert a.in_alert and a.alerts == 3 and a.alert_for_s == pytest.approx(1.0)


def test_camera_down_and_up():
    state = DashboardState()
    feed = Feed(state)
    feed.status(0.0, ["a"])
    feed.send("camera.a", 1.0, "a", event="down", state="reconnecting", reason="connection refused", since="")
    a = cams(state.snapshot(now=1.0))["a"]
    assert a.state == "reconnecting" and a.reason == "connection refused"
    feed.send("camera.a", 2.0, "a", event="up", state="streaming", reason="", since="")
    assert cams(state.snapshot(now=2.0))["a"].state == "streaming"


def test_seq_gaps_count_lost_messages_and_a_restart_does_not():
    state = DashboardState()
    feed = Feed(state)
    feed.status(0.0, ["a"])
    feed.seq += 4                      # four messages never arrive
    feed.score(1.0, "a", 0.2)
    assert state.snapshot(now=1.0).monitors[0].lost_messages == 4
    feed.seq = 0                       # the monitor restarted
    feed.score(2.0, "a", 0.2)
    feed.score(3.0, "a", 0.2)
    assert state.snapshot(now=3.0).monitors[0].lost_messages == 4


def test_feed_goes_quiet_and_comes_back():
    state = DashboardState(stale_after=5, clock=lambda: 0.0)
    assert state.snapshot(now=1.0).waiting
    feed = Feed(state)
    feed.status(1.0, ["a"])
    feed.score(2.0, "a", 0.3)
    snap = state.snapshot(now=6.0)
    assert not snap.waiting and snap.feed_quiet_for_s is None and cams(snap)["a"].quiet_for_s is None
    snap = state.snapshot(now=9.0)
    assert snap.feed_quiet_for_s == pytest.approx(7.0)
    assert cams(snap)["a"].quiet_for_s == pytest.approx(7.0)
    assert snap.monitors[0].quiet_for_s == pytest.approx(7.0)
    feed.status(9.5, ["a"])
    snap = state.snapshot(now=10.0)
    assert snap.feed_quiet_for_s is None and cams(snap)["a"].quiet_for_s is None


def test_one_quiet_monitor_among_live_ones():
    state = DashboardState(stale_after=5)
    one, two = Feed(state, "box-1"), Feed(state, "box-2")
    one.status(0.0, ["gate"])
    two.status(0.0, ["gate"])           # the same camera name on another monitor: its own row
    two.status(8.0, ["gate"])
    snap = state.snapshot(now=9.0)
    assert snap.feed_quiet_for_s is None
    rows = {c.key: c for c in snap.cameras}
    assert rows[("box-1", "gate")].quiet_for_s == pytest.approx(9.0)
    assert rows[("box-2", "gate")].quiet_for_s is None


@pytest.mark.parametrize("topic, payload, expected", [
    ("score.a", [1, 2], "expected a JSON object"),
    ("score.a", {"schema": 2, "monitor": "m", "seq": 0, "camera": "a", "type": "score", "score": 0.1}, "schema 2"),
    ("score.a", {"schema": 1, "monitor": "m", "camera": "a", "type": "score", "score": 0.1}, "'seq'"),
    ("score.a", {"schema": 1, "monitor": "m", "seq": 0, "camera": "a", "type": "score", "score": "hi"}, "'score'"),
    ("bogus.a", {"schema": 1, "monitor": "m", "seq": 0, "camera": "a"}, "unknown type 'bogus'"),
    ("alert.a", {"schema": 1, "monitor": "m", "seq": 0, "camera": "a", "type": "alert", "event": "middle"}, "'event'"),
    ("status", {"schema": 1, "monitor": "m", "seq": 0, "camera": None, "type": "status"}, "'cameras'"),
])
def test_malformed_messages_are_counted_and_named(topic, payload, expected):
    state = DashboardState()
    assert not state.feed(topic, payload, now=0.0)
    assert state.malformed == 1 and state.messages == 0
    assert expected in state.last_error and topic in state.last_error


def test_raw_frames():
    state = DashboardState()
    assert not state.feed_frames([b"score.a"])
    assert "1 frames" in state.last_error
    assert not state.feed_frames([b"score.a", b"{not json"])
    assert "undecodable" in state.last_error
    msg = {"schema": 1, "monitor": "m", "seq": 0, "camera": "a", "ts": "", "type": "score", "score": 0.4}
    assert state.feed_frames([b"score.a", json.dumps(msg).encode()])
    assert state.malformed == 2 and state.messages == 1
    assert cams(state.snapshot())["a"].score == 0.4


def test_announced_cameras_show_before_any_message():
    state = DashboardState()
    state.announce(monitor="box-1", model="demo", stage=2, providers=["CPUExecutionProvider"], cameras=["a", "b"])
    snap = state.snapshot()
    assert {c.name: c.state for c in snap.cameras} == {"a": "starting", "b": "starting"}
    assert snap.monitors[0].model == "demo" and snap.waiting
