"""What the dashboard knows, built only from the ZeroMQ messages of docs/MESSAGES.md.

`DashboardState.feed(topic, msg)` takes one (topic, JSON object) pair at a time; `snapshot()`
freezes everything into plain immutable values for the renderer, so rendering can happen on
another thread than feeding. The same class serves the embedded dashboard (fed from the
publisher's listener hook) and `run_monitor.py dashboard --connect` (fed from a SUB socket),
so both show exactly what a remote subscriber would see.

Clocks: everything time-based (score history, staleness, live alert durations) uses the
receiver's monotonic clock, never the publisher's `ts`, so a monitor on another machine with
a skewed clock cannot make live numbers look stale or stale numbers look live.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

SCHEMA = 1
TYPES = ("alert", "score", "camera", "status")
# Camera states of the contract, plus `starting` for a camera announced by the embedding
# monitor but not yet heard of on the feed.
STREAMING = "streaming"


@dataclass(frozen=True)
class CameraView:
    """One camera row as the renderer sees it."""
    key: tuple[str, str]             # (monitor id, camera name): names may repeat across monitors
    name: str
    monitor: str
    state: str
    source: str
    reason: str
    input_fps: float | None
    snippets_per_s: float | None
    latency_ms: float | None
    queue: int | None
    dropped_snippets: int | None
    score: float | None
    threshold: float | None
    in_alert: bool
    alert_for_s: float | None        # seconds in the current alert, None when not in alert
    alerts: int
    history: np.ndarray              # [n, 2] float: (age in seconds, score), oldest first
    quiet_for_s: float | None        # seconds since anything was heard about it, when stale
    cooldown_s: float = 0.0          # seconds before a new alert may start (from `status`)
    levels: "Levels | None" = None   # where its alert levels come from (status `calibration`)


@dataclass(frozen=True)
class Levels:
    """A camera's alert levels as its status says: `source` is bundle, config, calibrated or
    learning; target and footage are those of its calibration (so far, while learning)."""
    source: str
    target_per_day: float | None = None
    footage_s: float | None = None
    learn_s: float | None = None


@dataclass(frozen=True)
class AlertView:
    alert_id: str
    monitor: str
    camera: str
    started: str | None              # ISO time of the first frame, from the message
    ended: str | None
    peak: float | None
    threshold: float | None
    duration_s: float                # live alerts: grows with the receiver's clock
    snapshot: str | None
    active: bool
    reason: str = ""                 # why it ended, when the monitor says (e.g. "shutdown")
    selected: bool = False           # the operator's cursor is on it (up/down)
    verdict: str = ""                # "false" / "true" once the operator marked it here


@dataclass(frozen=True)
class MonitorView:
    monitor: str
    model: str
    stage: int | None
    providers: tuple[str, ...]
    uptime_s: float | None
    dropped_messages: int            # the publisher could not send them (from `status`)
    lost_messages: int               # gaps in `seq` seen here
    alerts_today: int
    quiet_for_s: float | None
    faults: tuple[tuple[str, str], ...] = ()  # (kind, message) from `status`, e.g. ("event_log", "cannot write ...")
    warning: str = ""                # the monitor's word about its model (status `model.warning`)


@dataclass(frozen=True)
class DashboardSnapshot:
    monitors: tuple[MonitorView, ...]
    cameras: tuple[CameraView, ...]
    alerts: tuple[AlertView, ...]    # newest first
    messages: int                    # accepted so far
    malformed: int
    last_error: str
    feed: str                        # where the messages come from, for the header
    feed_quiet_for_s: float | None   # None while the feed is live
    waiting: bool                    # nothing received yet
    stale_after_s: float
    history_s: float
    wall_time: float                 # time.time() at the snapshot, for the header clock
    notice: str = ""                 # the answer to the operator's last key (e.g. a mark)
    can_mark: bool = False           # the keys that mark alerts work here


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    v = _num(value)
    return None if v is None else int(v)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


@dataclass
class _Camera:
    monitor: str
    name: str
    state: str = "starting"
    source: str = ""
    reason: str = ""
    input_fps: float | None = None
    snippets_per_s: float | None = None
    latency_ms: float | None = None
    queue: int | None = None
    dropped_snippets: int | None = None
    score: float | None = None
    threshold: float | None = None
    alert_since: float | None = None   # None: not in an alert
    cooldown_s: float = 0.0
    levels: Levels | None = None
    alerts: int = 0
    last_seen: float | None = None
    history: deque = field(default_factory=deque)


@dataclass
class _Monitor:
    monitor: str
    model: str = ""
    stage: int | None = None
    providers: tuple[str, ...] = ()
    uptime_s: float | None = None
    uptime_at: float | None = None
    dropped_messages: int = 0
    lost_messages: int = 0
    alerts_today: int = 0
    warning: str = ""
    last_seq: int | None = None
    last_seen: float | None = None
    faults: tuple[tuple[str, str], ...] = ()


@dataclass
class _Alert:
    alert_id: str
    monitor: str
    camera: str
    started: str | None
    ended: str | None
    peak: float | None
    threshold: float | None
    duration_s: float
    received_at: float
    snapshot: str | None
    active: bool
    reason: str = ""


class MessageError(ValueError):
    """A message that does not follow docs/MESSAGES.md (counted and shown, never fatal)."""


class DashboardState:
    def __init__(self, *, stale_after: float = 5.0, history_s: float = 300.0, max_alerts: int = 200,
                 feed: str = "", clock: Callable[[], float] = time.monotonic):
        self.stale_after = float(stale_after)
        self.history_s = float(history_s)
        self.feed_label = feed
        self._clock = clock
        self._started = clock()
        self._monitors: dict[str, _Monitor] = {}
        self._cameras: dict[tuple[str, str], _Camera] = {}
        self._alerts: dict[str, _Alert] = {}      # insertion order == arrival order
        self._max_alerts = max_alerts
        self.messages = 0
        self.malformed = 0
        self.last_error = ""
        self._last_message: float | None = None
        # The operator's side (keys), not the feed's: the selected alert and verdicts given here.
        self._selected: str | None = None
        self._verdicts: dict[str, bool] = {}
        self.notice = ""
        self.can_mark = False

    # -- seeding by the embedding monitor (before its first status heartbeat) ------------
    def announce(self, monitor: str = "", model: str = "", stage: int | None = None,
                 providers: tuple[str, ...] | list[str] = (), cameras: list[str] | tuple[str, ...] = (),
                 warning: str = "") -> None:
        m = self._monitor(monitor)
        m.warning = m.warning or warning
        m.model = m.model or model
        m.stage = m.stage if m.stage is not None else stage
        m.providers = m.providers or tuple(providers)
        for name in cameras:
            self._camera(monitor, name)

    # -- feeding --------------------------------------------------------------------------
    def feed(self, topic: str, msg: Any, now: float | None = None) -> bool:
        """Take one message; returns False (and counts it) when it does not follow the contract."""
        now = self._clock() if now is None else now
        try:
            self._feed(topic, msg, now)
        except MessageError as exc:
            self.malformed += 1
            self.last_error = f"topic {topic!r}: {exc}"
            return False
        self.messages += 1
        self._last_message = now
        return True

    def feed_frames(self, frames: list[bytes], now: float | None = None) -> bool:
        """Take one raw ZeroMQ message (topic frame, JSON frame) as received by a SUB socket."""
        if len(frames) != 2:
            return self._reject(f"{len(frames)} frames, expected 2 (topic, JSON object)")
        try:
            topic = frames[0].decode("utf-8")
            msg = json.loads(frames[1].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return self._reject(f"undecodable message: {exc}")
        return self.feed(topic, msg, now)

    def _reject(self, reason: str) -> bool:
        self.malformed += 1
        self.last_error = reason
        return False

    def _feed(self, topic: str, msg: Any, now: float) -> None:
        if not isinstance(msg, Mapping):
            raise MessageError(f"payload is {type(msg).__name__}, expected a JSON object")
        kind = msg.get("type") or topic.split(".", 1)[0]
        if kind not in TYPES:
            raise MessageError(f"unknown type {kind!r}")
        schema = msg.get("schema")
        if schema != SCHEMA:
            raise MessageError(f"schema {schema!r}, this dashboard reads schema {SCHEMA}")
        monitor = self._monitor(_str(msg.get("monitor")))
        if not msg.get("replayed"):  # a replayed alert keeps its old seq: not a gap, not a restart
            self._track_seq(monitor, msg.get("seq"))
        monitor.last_seen = now
        if kind == "status":
            self._on_status(monitor, msg, now)
            return
        camera_name = msg.get("camera")
        if not isinstance(camera_name, str) or not camera_name:
            if "." in topic:
                camera_name = topic.split(".", 1)[1]
            else:
                raise MessageError("field 'camera' missing")
        cam = self._camera(monitor.monitor, camera_name)
        cam.last_seen = now
        if kind == "score":
            self._on_score(cam, msg, now)
        elif kind == "alert":
            self._on_alert(monitor, cam, msg, now)
        else:
            self._on_camera(cam, msg)

    def _track_seq(self, m: _Monitor, seq: Any) -> None:
        seq = _int(seq)
        if seq is None:
            raise MessageError("field 'seq' missing or not a number")
        if m.last_seq is not None and seq > m.last_seq + 1:
            m.lost_messages += seq - m.last_seq - 1
        m.last_seq = seq  # a smaller seq means the publisher restarted: count from there

    def _on_status(self, m: _Monitor, msg: Mapping, now: float) -> None:
        model = msg.get("model") if isinstance(msg.get("model"), Mapping) else {}
        m.model = _str(model.get("name")) or m.model
        m.stage = _int(model.get("stage")) if model.get("stage") is not None else m.stage
        providers = model.get("providers")
        if isinstance(providers, list):
            m.providers = tuple(_str(p) for p in providers)
        if "warning" in model:
            m.warning = _str(model.get("warning"))
        m.uptime_s = _num(msg.get("uptime_s"))
        m.uptime_at = now
        m.dropped_messages = _int(msg.get("dropped_messages")) or 0
        faults = msg.get("faults")
        if isinstance(faults, list):  # every status says all that is wrong now: none listed, none left
            m.faults = tuple((_str(f.get("kind")) or "fault", _str(f.get("message")))
                             for f in faults if isinstance(f, Mapping))
        alerts_today = _int(msg.get("alerts_today"))
        if alerts_today is not None:
            m.alerts_today = alerts_today
        cameras = msg.get("cameras")
        if not isinstance(cameras, list):
            raise MessageError("field 'cameras' missing or not a list")
        for entry in cameras:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("camera"), str):
                raise MessageError("an entry of 'cameras' has no 'camera' name")
            cam = self._camera(m.monitor, entry["camera"])
            cam.last_seen = now
            cam.state = _str(entry.get("state")) or cam.state
            cam.source = _str(entry.get("source")) or cam.source
            cam.input_fps = _num(entry.get("input_fps"))
            cam.snippets_per_s = _num(entry.get("snippets_per_s"))
            cam.latency_ms = _num(entry.get("latency_ms"))
            cam.queue = _int(entry.get("queue"))
            cam.dropped_snippets = _int(entry.get("dropped_snippets"))
            if _num(entry.get("threshold")) is not None:
                cam.threshold = _num(entry.get("threshold"))
            if cam.score is None and _num(entry.get("score")) is not None:
                cam.score = _num(entry.get("score"))  # score messages carry the live value
            self._set_alert(cam, bool(entry.get("in_alert")), now)
            cam.cooldown_s = _num(entry.get("cooldown_s")) or 0.0
            levels = entry.get("calibration")
            if isinstance(levels, Mapping) and isinstance(levels.get("source"), str):
                cam.levels = Levels(levels["source"], _num(levels.get("target_per_day")), _num(levels.get("footage_s")),
                                    _num(levels.get("learn_s")))
            alerts = _int(entry.get("alerts"))
            if alerts is not None:
                cam.alerts = alerts

    def _on_score(self, cam: _Camera, msg: Mapping, now: float) -> None:
        score = _num(msg.get("score"))
        if score is None:
            raise MessageError("field 'score' missing or not a number")
        cam.score = score
        threshold = _num(msg.get("threshold"))
        if threshold is not None:
            cam.threshold = threshold
        latency = _num(msg.get("latency_ms"))
        if latency is not None:
            cam.latency_ms = latency
        if "in_alert" in msg:
            self._set_alert(cam, bool(msg.get("in_alert")), now)
        if cam.state == "starting":
            cam.state = STREAMING
        cam.history.append((now, score))
        while cam.history and now - cam.history[0][0] > self.history_s:
            cam.history.popleft()

    def _on_alert(self, m: _Monitor, cam: _Camera, msg: Mapping, now: float) -> None:
        event = msg.get("event")
        if event not in ("start", "end"):
            raise MessageError(f"alert 'event' is {event!r}, expected 'start' or 'end'")
        alert_id = _str(msg.get("alert_id")) or f"{cam.name}@{msg.get('seq')}"
        key = f"{m.monitor}\x00{alert_id}"
        times = msg.get("time") if isinstance(msg.get("time"), list) else [None, None]
        times = (list(times) + [None, None])[:2]
        peak = _num(msg.get("peak"))
        peak = _num(msg.get("score")) if peak is None else peak
        threshold = _num(msg.get("threshold"))
        snapshot = msg.get("snapshot") if isinstance(msg.get("snapshot"), str) else None
        entry = self._alerts.get(key)
        if entry is None:
            entry = _Alert(alert_id, m.monitor, cam.name, _str(times[0]) or None, None, peak, threshold,
                           _num(msg.get("duration_s")) or 0.0, now, snapshot, True)
            self._alerts[key] = entry
            if event == "start":
                cam.alerts += 1
                m.alerts_today += 1
            while len(self._alerts) > self._max_alerts:
                self._alerts.pop(next(iter(self._alerts)))
        entry.peak = peak if peak is not None else entry.peak
        entry.threshold = threshold if threshold is not None else entry.threshold
        entry.snapshot = snapshot or entry.snapshot
        entry.duration_s = _num(msg.get("duration_s")) or entry.duration_s
        entry.received_at = now
        if event == "end":
            entry.active = False
            entry.reason = _str(msg.get("reason"))
            entry.ended = _str(times[1]) or None
            self._set_alert(cam, False, now)
        else:
            if threshold is not None:
                cam.threshold = threshold
            self._set_alert(cam, True, now)

    def _on_camera(self, cam: _Camera, msg: Mapping) -> None:
        state = msg.get("state")
        if not isinstance(state, str) or not state:
            raise MessageError("field 'state' missing")
        cam.state = state
        cam.reason = _str(msg.get("reason"))

    @staticmethod
    def _set_alert(cam: _Camera, in_alert: bool, now: float) -> None:
        if in_alert and cam.alert_since is None:
            cam.alert_since = now
        elif not in_alert:
            cam.alert_since = None

    def _monitor(self, monitor: str) -> _Monitor:
        m = self._monitors.get(monitor)
        if m is None:
            m = self._monitors[monitor] = _Monitor(monitor)
        return m

    def _camera(self, monitor: str, name: str) -> _Camera:
        key = (monitor, name)
        cam = self._cameras.get(key)
        if cam is None:
            self._monitor(monitor)
            cam = self._cameras[key] = _Camera(monitor, name)
        return cam

    # -- the operator's keys ----------------------------------------------------------------
    def move_selection(self, step: int) -> None:
        """Move the cursor over the recent alerts (newest first): -1 up, +1 down; the first
        move selects the newest."""
        keys = list(reversed(self._alerts))
        if not keys:
            return
        if self._selected not in keys:
            self._selected = keys[0]
            return
        index = min(max(keys.index(self._selected) + step, 0), len(keys) - 1)
        self._selected = keys[index]

    def selected_alert(self) -> tuple[str, str] | None:
        """(monitor, alert id) under the cursor, or None."""
        alert = self._alerts.get(self._selected) if self._selected is not None else None
        return None if alert is None else (alert.monitor, alert.alert_id)

    def set_verdict(self, monitor: str, alert_id: str, verdict: bool) -> None:
        self._verdicts[f"{monitor}\x00{alert_id}"] = verdict

    # -- reading --------------------------------------------------------------------------
    def quiet_for(self, now: float | None = None) -> float | None:
        """Seconds without any message when that exceeds stale_after, else None."""
        now = self._clock() if now is None else now
        return self._quiet(self._last_message if self._last_message is not None else self._started, now)

    def _quiet(self, last_seen: float | None, now: float) -> float | None:
        """Seconds since `last_seen` when that exceeds stale_after, else None."""
        if last_seen is None:
            return None
        age = now - last_seen
        return age if age > self.stale_after else None

    def snapshot(self, now: float | None = None) -> DashboardSnapshot:
        now = self._clock() if now is None else now
        monitors = []
        for m in self._monitors.values():
            uptime = None if m.uptime_s is None else m.uptime_s + (now - m.uptime_at)
            monitors.append(MonitorView(m.monitor, m.model, m.stage, m.providers, uptime,
                                        m.dropped_messages, m.lost_messages, m.alerts_today,
                                        self._quiet(m.last_seen, now), m.faults, m.warning))
        cameras = []
        for c in self._cameras.values():
            history = np.array(c.history, dtype=np.float64).reshape(-1, 2)
            history[:, 0] = now - history[:, 0]
            history = history[history[:, 0] <= self.history_s]
            # A camera is stale when neither it nor its monitor's heartbeat has been heard lately.
            mon = self._monitors[c.monitor]
            seen = max((t for t in (c.last_seen, mon.last_seen) if t is not None), default=None)
            cameras.append(CameraView(
                (c.monitor, c.name), c.name, c.monitor, c.state, c.source, c.reason, c.input_fps,
                c.snippets_per_s, c.latency_ms, c.queue, c.dropped_snippets, c.score, c.threshold,
                c.alert_since is not None, None if c.alert_since is None else now - c.alert_since, c.alerts,
                history, self._quiet(seen, now), c.cooldown_s, c.levels))
        alerts = []
        for key, a in reversed(self._alerts.items()):
            duration = a.duration_s + (now - a.received_at if a.active else 0.0)
            verdict = self._verdicts.get(key)
            alerts.append(AlertView(a.alert_id, a.monitor, a.camera, a.started, a.ended, a.peak,
                                    a.threshold, duration, a.snapshot, a.active, a.reason, key == self._selected,
                                    "" if verdict is None else ("true" if verdict else "false")))
        return DashboardSnapshot(tuple(monitors), tuple(cameras), tuple(alerts), self.messages,
                                 self.malformed, self.last_error, self.feed_label,
                                 self.quiet_for(now), self._last_message is None, self.stale_after,
                                 self.history_s, time.time(), self.notice, self.can_mark)
