"""Operator feedback from the dashboard (issue 13 §5): up/down select an alert, `f` marks it a
false alarm in the event store (EventStore.mark, as `run_monitor.py mark ALERT_ID false`).
A real SQLite store, a real PUB socket, the real dashboard command in a real terminal (tmux).
The monitor's own dashboard marks through its store too: tests/test_honest_model.py."""
from __future__ import annotations

import pytest

from monitor.dashboard.app import KeyDecoder, handle_key
from monitor.dashboard.render import render_dashboard
from monitor.dashboard.state import DashboardState
from monitor.messages.event_store import EventStore
from tests.test_dashboard_feed import FakeMonitor
from tests.test_dashboard_terminal import EXITED, Tmux, dashboard_cmd, row


def alert_message(monitor: str, seq: int, alert_id: str, camera: str = "gate") -> dict:
    return {"schema": 1, "monitor": monitor, "seq": seq, "camera": camera, "ts": "2026-12-01T10:00:00.000Z",
            "type": "alert", "event": "start", "alert_id": alert_id, "score": 0.9, "peak": 0.9, "threshold": 0.6,
            "off_threshold": 0.5, "snippets": [3, 3], "frames": [48, 63],
            "time": ["2026-12-01T10:00:00.000Z", None], "duration_s": 0.0, "model": {"name": "m", "stage": 4},
            "snapshot": None}


def test_arrow_keys_are_decoded_from_their_escape_sequences():
    decoder = KeyDecoder()
    assert [decoder.feed(c) for c in "\x1b[A"] == [None, None, "up"]
    assert [decoder.feed(c) for c in "\x1bOB"] == [None, None, "down"]
    assert [decoder.feed(c) for c in "fq"] == ["f", "q"]


def test_f_marks_the_selected_alert_false_in_the_store(tmp_path):
    store = EventStore(tmp_path / "events.db")
    state = DashboardState()
    for seq, alert_id in enumerate(("gate-1", "gate-2")):
        message = alert_message("box", seq, alert_id)
        store.record(dict(message))
        assert state.feed("alert.gate", message)
    state.feed("alert.gate", alert_message("box", 2, "gate-ghost"))   # on the feed, never stored

    def mark(alert_id, monitor, verdict):
        return store.mark(alert_id, verdict, monitor=monitor)

    handle_key(state, "f", None)
    assert "marking needs the event store" in state.notice
    handle_key(state, "f", mark)
    assert "select an alert first" in state.notice and store.verdicts() == []
    # Newest first: the first move selects gate-ghost, then gate-2, gate-1, and back up to gate-2.
    for key in ("down", "down", "down", "up", "f"):
        handle_key(state, key, mark)
    assert [(v.alert_id, v.verdict) for v in store.verdicts()] == [("gate-2", False)]
    assert state.notice == "gate-2 marked false (a false alarm)"
    screen = render_dashboard(state.snapshot(), 140, 30).plain
    assert "gate-2 marked false" in screen
    shown = [line for line in screen.splitlines() if "gate" in line and "0.900" in line]
    assert len(shown) == 3 and " false " in shown[1] and " false " not in shown[0] + shown[2]
    handle_key(state, "up", mark)
    handle_key(state, "f", mark)                 # the ghost is not in the store: said, not raised
    assert "gate-ghost not marked" in state.notice and "no alert" in state.notice
    handle_key(state, "down", mark)
    handle_key(state, "t", mark)                 # a later verdict replaces the earlier one
    assert [(v.alert_id, v.verdict) for v in store.verdicts()] == [("gate-2", True)]
    store.close()


@pytest.mark.slow
def test_the_dashboard_command_with_db_marks_an_alert_from_the_keyboard(tmp_path):
    db = tmp_path / "events.db"
    EventStore(db).close()
    feed = FakeMonitor("test-box", cameras=("gate", "yard")).start()
    tmux = Tmux(width=150, height=32)
    try:
        tmux.start(dashboard_cmd("--connect", feed.endpoint, "--db", str(db)))
        tmux.wait_for("the camera rows", lambda s: row(s, "gate") is not None and "streaming" in (row(s, "gate") or ""))
        store = EventStore(db)
        store.record(feed.alert("gate", "start", 0.93))     # stored and published, as the monitor does
        screen = tmux.wait_for("the alert", lambda s: "recent alerts  (1)" in s)
        assert "f: false alarm" in screen
        tmux.keys("Down")
        tmux.keys("f")
        tmux.wait_for("the verdict", lambda s: "gate-0001 marked false" in s)
        assert [(v.alert_id, v.verdict, v.monitor) for v in store.verdicts()] == [("gate-0001", False, "test-box")]
        store.close()
        tmux.keys("q")
        screen = tmux.wait_for("the dashboard to exit", lambda s: EXITED.search(s) is not None)
        assert EXITED.search(screen).group(1) == "0"
    finally:
        tmux.close()
        feed.close()
