"""The monitors' `status` messages (docs/MESSAGES.md) as Prometheus metrics, for a site's own
monitoring (Prometheus, Grafana, Alertmanager) to scrape: one collector that keeps the newest
status of each monitor heard and turns it into metric families when scraped.

A monitor that has gone silent keeps its last figures but `ssrl_up` and `ssrl_healthy` drop to
0 once its newest status is older than `stale_s`: silence is the one thing a dead monitor cannot
report itself."""
from __future__ import annotations

import threading
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitor.messages.health import DEFAULT_MAX_LOOP_S, judge

# (metric, help, the camera field, scale): gauges per camera, labelled monitor and camera.
CAMERA_GAUGES = (
    ("ssrl_camera_input_fps", "frames per second read from the source", "input_fps", 1.0),
    ("ssrl_camera_processing_fps", "source frames scored per second (matches input_fps when keeping up)",
     "processing_fps", 1.0),
    ("ssrl_camera_latency_seconds", "median of recent latencies: a snippet's last frame read to its score published",
     "latency_ms", 1e-3),
    ("ssrl_camera_score", "the latest anomaly score", "score", 1.0),
    ("ssrl_camera_threshold", "the score at which an alert starts", "threshold", 1.0),
    ("ssrl_camera_queue", "snippets waiting to be scored", "queue", 1.0),
)
CAMERA_COUNTERS = (
    ("ssrl_camera_dropped_snippets", "snippets dropped to stay live since the monitor started", "dropped_snippets"),
    ("ssrl_camera_alerts", "alerts raised since the monitor started", "alerts"),
    ("ssrl_camera_faulty_snippets", "snippets whose features or score were not finite", "faulty_snippets"),
)
STATES = ("starting", "streaming", "reconnecting", "stalled", "faulty", "ended")


class StatusCollector:
    def __init__(self, stale_s: float, max_loop_s: float = DEFAULT_MAX_LOOP_S, clock=time.monotonic):
        self.stale_s, self.max_loop_s, self.clock = stale_s, max_loop_s, clock
        self._newest: dict[str, tuple[float, dict]] = {}   # monitor -> (heard at, status)
        self._lock = threading.Lock()

    def heard(self, status: dict) -> None:
        with self._lock:
            self._newest[str(status.get("monitor", "?"))] = (self.clock(), status)

    def collect(self):
        with self._lock:
            newest = dict(self._newest)
        now = self.clock()

        def gauge(name, text, labels):
            return GaugeMetricFamily(name, text, labels=labels)

        up = gauge("ssrl_up", "1 while the monitor's status messages arrive", ["monitor"])
        healthy = gauge("ssrl_healthy", "1 when up and its status is healthy (run_monitor.py health's judgement)",
                        ["monitor"])
        age = gauge("ssrl_status_age_seconds", "seconds since the monitor's newest status message", ["monitor"])
        uptime = gauge("ssrl_uptime_seconds", "seconds since the monitor started", ["monitor"])
        today = gauge("ssrl_alerts_today", "alerts raised today (UTC)", ["monitor"])
        faults = gauge("ssrl_faults", "faults of the monitor itself (an event store it cannot write)", ["monitor"])
        loop = gauge("ssrl_engine_loop_age_seconds", "seconds since the slowest scoring worker went round its loop",
                     ["monitor"])
        dropped = CounterMetricFamily("ssrl_dropped_messages", "messages the publisher knows it lost", labels=["monitor"])
        snippets = CounterMetricFamily("ssrl_engine_snippets", "snippets scored", labels=["monitor"])
        streaming = gauge("ssrl_camera_streaming", "1 while the camera streams", ["monitor", "camera"])
        state = gauge("ssrl_camera_state", "1 for the camera's current state", ["monitor", "camera", "state"])
        in_alert = gauge("ssrl_camera_in_alert", "1 while the camera is in alert", ["monitor", "camera"])
        gauges = {name: gauge(name, text, ["monitor", "camera"]) for name, text, _, _ in CAMERA_GAUGES}
        counters = {name: CounterMetricFamily(name, text, labels=["monitor", "camera"])
                    for name, text, _ in CAMERA_COUNTERS}
        for monitor, (at, status) in sorted(newest.items()):
            alive = now - at <= self.stale_s
            up.add_metric([monitor], float(alive))
            healthy.add_metric([monitor], float(alive and judge(status, self.max_loop_s).healthy))
            age.add_metric([monitor], now - at)
            uptime.add_metric([monitor], float(status.get("uptime_s") or 0.0))
            today.add_metric([monitor], float(status.get("alerts_today") or 0))
            faults.add_metric([monitor], float(len(status.get("faults") or [])))
            engine = status.get("engine") or {}
            if engine.get("loop_age_s") is not None:
                loop.add_metric([monitor], float(engine["loop_age_s"]))
            dropped.add_metric([monitor], float(status.get("dropped_messages") or 0))
            snippets.add_metric([monitor], float(engine.get("snippets") or 0))
            for cam in status.get("cameras") or []:
                labels = [monitor, str(cam.get("camera"))]
                streaming.add_metric(labels, float(cam.get("state") == "streaming"))
                for s in STATES:
                    state.add_metric([*labels, s], float(cam.get("state") == s))
                in_alert.add_metric(labels, float(bool(cam.get("in_alert"))))
                for name, _, key, scale in CAMERA_GAUGES:
                    if cam.get(key) is not None:   # no latency before the first score, say
                        gauges[name].add_metric(labels, float(cam[key]) * scale)
                for name, _, key in CAMERA_COUNTERS:
                    counters[name].add_metric(labels, float(cam.get(key) or 0))
        yield from (up, healthy, age, uptime, today, faults, loop, dropped, snippets, streaming, state, in_alert,
                    *gauges.values(), *counters.values())
