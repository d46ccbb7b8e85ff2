"""A tiny publisher of contract-shaped messages (docs/MESSAGES.md, schema 1) on a real PUB
socket on loopback, used to feed the dashboard in tests; and the checks that it, and the
dashboard state fed through a real SUB socket, follow the contract."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import zmq

from monitor.dashboard.state import DashboardState

COMMON = {"schema", "monitor", "seq", "camera", "ts", "type"}


def iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class FakeMonitor:
    """Publishes what a monitor would: scores per camera, alerts, camera up/down, status.

    `start()` runs a loop on a thread: every tick a score per camera and a status every few
    ticks. `hot` cameras score high; `trigger_alert(camera)` makes the next tick publish an
    alert start for it (so a test can wait until the subscriber is connected first)."""

    def __init__(self, monitor_id: str = "test-box", cameras=("dock-gate", "lobby"), threshold: float = 0.6,
                 sources: dict[str, str] | None = None, tick_s: float = 0.1, connect: str | None = None):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if connect:   # publish into a broker's frontend, as `run --connect` does
            self.sock.connect(connect)
            self.endpoint = connect
        else:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
            self.endpoint = f"tcp://127.0.0.1:{port}"
        self.monitor_id = monitor_id
        self.cameras = list(cameras)
        self.threshold = threshold
        self.sources = {c: f"synthetic://{c}" for c in cameras} | (sources or {})
        self.tick_s = tick_s
        self.seq = 0
        self.snippet = {c: 0 for c in cameras}
        self.in_alert: dict[str, str] = {}       # camera -> alert id
        self.alerts = {c: 0 for c in cameras}
        self.hot: set[str] = set()
        self._pending_alerts: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.started = time.time()

    # -- single messages ----------------------------------------------------------------
    def message(self, topic: str, camera: str | None, **fields) -> dict:
        with self._lock:
            msg = {"schema": 1, "monitor": self.monitor_id, "seq": self.seq, "camera": camera,
                   "ts": iso(), "type": topic.split(".", 1)[0], **fields}
            self.seq += 1
        return msg

    def send(self, topic: str, msg: dict) -> None:
        self.sock.send_multipart([topic.encode(), json.dumps(msg).encode()])

    def score(self, camera: str, score: float) -> dict:
        i = self.snippet[camera]
        self.snippet[camera] += 1
        msg = self.message(f"score.{camera}", camera, snippet=i, frames=[16 * i, 16 * i + 15],
                           time=[iso(), iso()], score=score, raw_score=score, threshold=self.threshold,
                           in_alert=camera in self.in_alert, latency_ms=42.0, lookahead=0)
        self.send(f"score.{camera}", msg)
        return msg

    def alert(self, camera: str, event: str, peak: float, duration_s: float = 0.0) -> dict:
        if event == "start":
            self.alerts[camera] += 1
            self.in_alert[camera] = f"{camera}-{self.alerts[camera]:04d}"
            alert_id = self.in_alert[camera]
        else:
            alert_id = self.in_alert.pop(camera)
        i = self.snippet[camera]
        msg = self.message(f"alert.{camera}", camera, event=event, alert_id=alert_id, score=peak, peak=peak,
                           threshold=self.threshold, off_threshold=self.threshold - 0.1, snippets=[i, i],
                           frames=[16 * i, 16 * i + 15], time=[iso(), None if event == "start" else iso()],
                           duration_s=duration_s, model={"name": "tiny-test", "stage": 3},
                           snapshot=f"/tmp/snapshots/{alert_id}.jpg")
        self.send(f"alert.{camera}", msg)
        return msg

    def camera_event(self, camera: str, event: str, state: str, reason: str = "") -> dict:
        msg = self.message(f"camera.{camera}", camera, event=event, state=state, reason=reason, since=iso())
        self.send(f"camera.{camera}", msg)
        return msg

    def status(self) -> dict:
        cams = [{"camera": c, "state": "streaming", "input_fps": 25.0, "snippets_per_s": 1.56,
                 "latency_ms": 42.0, "queue": 0, "dropped_snippets": 0, "score": self._level(c),
                 "threshold": self.threshold, "in_alert": c in self.in_alert, "alerts": self.alerts[c],
                 "source": self.sources[c]} for c in self.cameras]
        msg = self.message("status", None, uptime_s=time.time() - self.started,
                           model={"name": "tiny-test", "stage": 3, "providers": ["CPUExecutionProvider"], "window": 8},
                           dropped_messages=0, alerts_today=sum(self.alerts.values()), cameras=cams)
        self.send("status", msg)
        return msg

    def _level(self, camera: str) -> float:
        return 0.9 if camera in self.hot else 0.12

    # -- the background loop --------------------------------------------------------------
    def trigger_alert(self, camera: str) -> None:
        with self._lock:
            self._pending_alerts.append(camera)

    def start(self) -> "FakeMonitor":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        tick = 0
        while not self._stop.wait(self.tick_s):
            with self._lock:
                pending, self._pending_alerts = self._pending_alerts, []
            for camera in pending:
                self.hot.add(camera)
                self.alert(camera, "start", 0.91)
            for camera in self.cameras:
                self.score(camera, self._level(camera) + 0.02 * (tick % 3))
            if tick % 5 == 0:
                self.status()
            tick += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.sock.close(0)
        self.ctx.term()


def subscriber(endpoint: str):
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return ctx, sub


def receive_until(sub, state: DashboardState | None, done, timeout_s: float = 20.0) -> list[tuple[str, dict]]:
    """Receive (and feed) messages until `done(received)` holds; fails after a generous timeout."""
    got: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout_s
    while not done(got):
        assert time.monotonic() < deadline, f"gave up waiting; received {len(got)} messages"
        if sub.poll(200):
            frames = sub.recv_multipart()
            got.append((frames[0].decode(), json.loads(frames[1])))
            if state is not None:
                assert state.feed_frames(frames), state.last_error
    return got


def test_fake_monitor_publishes_contract_shaped_messages():
    feed = FakeMonitor().start()
    ctx, sub = subscriber(feed.endpoint)
    try:
        got = receive_until(sub, None, lambda g: {t.split(".")[0] for t, _ in g} >= {"score", "status"})
        feed.trigger_alert("dock-gate")
        got = receive_until(sub, None, lambda g: any(t.startswith("alert.") for t, _ in g))
    finally:
        sub.close(0), ctx.term(), feed.close()
    for topic, msg in got:
        assert COMMON <= msg.keys(), topic
        assert msg["type"] == topic.split(".")[0] and msg["schema"] == 1
        assert (msg["camera"] is None) == (topic == "status")
    alert = next(m for t, m in got if t == "alert.dock-gate")
    assert alert["event"] == "start" and alert["alert_id"] == "dock-gate-0001"
    seqs = [m["seq"] for _, m in got]
    assert seqs == sorted(seqs)


def test_state_fed_through_a_real_sub_socket_sees_cameras_scores_and_the_alert():
    feed = FakeMonitor(sources={"dock-gate": "rtsp://admin:hunter2@10.1.2.3/live", "lobby": "synthetic://lobby"}).start()
    ctx, sub = subscriber(feed.endpoint)
    state = DashboardState(stale_after=5.0)
    try:
        receive_until(sub, state, lambda g: any(t == "status" for t, _ in g))
        feed.trigger_alert("dock-gate")
        receive_until(sub, state, lambda g: any(t.startswith("alert.") for t, _ in g)
                      and sum(t == "status" for t, _ in g) >= 1)
    finally:
        sub.close(0), ctx.term(), feed.close()
    snap = state.snapshot()
    cams = {c.name: c for c in snap.cameras}
    assert set(cams) == {"dock-gate", "lobby"}
    assert cams["dock-gate"].in_alert and not cams["lobby"].in_alert
    assert cams["lobby"].score is not None and cams["lobby"].score < 0.6
    assert snap.alerts[0].camera == "dock-gate" and snap.alerts[0].active
    assert snap.monitors[0].model == "tiny-test" and snap.monitors[0].lost_messages == 0
    assert snap.malformed == 0 and snap.feed_quiet_for_s is None
