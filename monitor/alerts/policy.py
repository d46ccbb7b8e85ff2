"""The per-camera alert policy: a threshold with hysteresis (on and off levels), a minimum
duration, a cooldown and optional smoothing. An alert is a `start` event and an `end` event
with the peak score, the snippet, frame and time range, and where in the frame it is
(docs/MESSAGES.md; monitor.alerts.localisation).

Time is the source's own (SnippetInfo's *_ts): wall-clock for live sources, the video's
for files, so that the cooldown and durations of a file read faster than real time are
those of the video."""
from __future__ import annotations

import datetime as _dt
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from monitor.alerts.localisation import AlertHeat, draw_overlay
from monitor.config import AlertSettings
from monitor.messages.publisher import iso

log = logging.getLogger("monitor.alerts.policy")


@dataclass
class SnippetInfo:
    index: int
    first_frame: int
    last_frame: int
    first_ts: float
    last_ts: float
    first_position: float | None = None   # files: seconds into the file (None for live sources)
    last_position: float | None = None


MAX_RAW_SCORES = 256   # raw scores an end event carries (calibration reads those of false alerts)


class AlertPolicy:
    def __init__(self, camera: str, settings: AlertSettings, model: dict, snapshot_dir: str | Path | None = None,
                 alert_ids: Callable[[], str] | None = None, bundle_sha: str | None = None):
        if settings.on is None or settings.off is None or settings.min_snippets is None:
            raise ValueError("AlertPolicy needs resolved settings: on, off, min_snippets (AlertSettings.resolved)")
        self.camera = camera
        self.settings = settings
        self.model = model
        self.bundle_sha = bundle_sha
        # False while the camera learns its calibration: scores flow, no alert starts.
        self.armed = True
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir else None
        # Short ids an operator can type (`mark ALERT_ID false`) come from the event store;
        # without one, an id from the camera, the start time and a random suffix.
        self._alert_ids = alert_ids
        self.count = 0
        self.in_alert = False
        self.score: float | None = None   # the latest score after smoothing (status messages)
        self._recent = deque(maxlen=settings.smoothing)
        self._run: deque = deque(maxlen=settings.min_snippets)  # consecutive snippets at or above `on`
        self._run_raw: deque = deque(maxlen=settings.min_snippets)  # their raw scores
        self._raw: list[float] = []   # raw scores of the open alert's snippets
        self._first: SnippetInfo | None = None
        self._last: SnippetInfo | None = None
        self._peak = 0.0
        self._alert_id = ""
        self._snapshot: str | None = None
        self._ended_ts: float | None = None
        self._latest_ts: float | None = None  # the last snippet's end, on the source's clock
        self._heat = AlertHeat()

    def retune(self, settings: AlertSettings) -> None:
        """New resolved levels and minimum duration (a calibration just learnt), from the next snippet."""
        self.settings = settings
        self._recent = deque(self._recent, maxlen=settings.smoothing)
        self._run = deque(maxlen=settings.min_snippets)
        self._run_raw = deque(maxlen=settings.min_snippets)

    @property
    def on(self) -> float:
        return float(self.settings.on)

    @property
    def off(self) -> float:
        return float(self.settings.off)

    @property
    def cooldown_left(self) -> float:
        """Seconds of cooldown left as of the latest snippet (the source's clock); 0 when none."""
        if self.in_alert or self._ended_ts is None or self._latest_ts is None:
            return 0.0
        return max(0.0, self.settings.cooldown_s - (self._latest_ts - self._ended_ts))

    def update(self, info: SnippetInfo, raw: float, keyframe: np.ndarray | None = None,
               where=None) -> tuple[float, list[dict]]:
        """Feed the score of the next reported snippet -> (score after smoothing, events).
        `where(n)`: the heat of the last n reported snippets, this one included
        (localisation.CameraLocator.where), asked only for snippets that start or extend an alert;
        it may return None (the engine only notes what to locate there, and locates it off the
        scoring thread: monitor.alerts.worker)."""
        self._latest_ts = info.last_ts
        self._recent.append(float(raw))
        score = float(np.mean(self._recent))
        self.score = score
        events = []
        if self.in_alert:
            if score < self.off:
                events.append(self._end())
                self._ended_ts = info.last_ts
            else:
                self._last = info
                self._peak = max(self._peak, score)
                if len(self._raw) < MAX_RAW_SCORES:
                    self._raw.append(float(raw))
                if where is not None:
                    self._heat.add(where(1))
        if not self.in_alert and not events:
            cooling = self._ended_ts is not None and info.last_ts - self._ended_ts < self.settings.cooldown_s
            if score >= self.on and not cooling and self.armed:
                self._run.append((info, score, keyframe))
                self._run_raw.append(float(raw))
                if len(self._run) >= self.settings.min_snippets:
                    events.append(self._start(where))
            else:
                self._run.clear()
                self._run_raw.clear()
        return score, events

    def _start(self, where=None) -> dict:
        first, _, keyframe = self._run[0]
        self._heat = AlertHeat()
        if where is not None:
            self._heat.add(where(len(self._run)))  # every snippet of the run that starts it
        self._first, self._last = first, self._run[-1][0]
        self._peak = max(s for _, s, _ in self._run)
        self._raw = list(self._run_raw)
        self._run.clear()
        self._run_raw.clear()
        self.in_alert = True
        self.count += 1
        if self._alert_ids is not None:
            self._alert_id = self._alert_ids()
        else:
            stamp = _dt.datetime.fromtimestamp(first.first_ts, _dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            self._alert_id = f"{self.camera}-{stamp}-{uuid.uuid4().hex[:6]}"
        self._snapshot = self._save_snapshot(keyframe)
        log.info("%s: alert %s started, score %.3f >= %.3f", self.camera, self._alert_id, self._peak, self.on)
        return self._event("start", end_ts=None)

    def _end(self, reason: str | None = None) -> dict:
        event = self._event("end", end_ts=self._last.last_ts)
        event["raw_scores"] = [round(r, 6) for r in self._raw]
        if reason:
            event["reason"] = reason
        self.in_alert = False
        log.info("%s: alert %s ended after %.1f s, peak %.3f", self.camera, self._alert_id, event["duration_s"], self._peak)
        return event

    def close(self, reason: str = "shutdown") -> list[dict]:
        """End an open alert (the monitor is stopping), so that the log never holds a start
        without its end."""
        return [self._end(reason)] if self.in_alert else []

    def _event(self, kind: str, end_ts: float | None) -> dict:
        first, last = self._first, self._last
        return {
            "event": kind, "alert_id": self._alert_id, "score": round(self._peak, 6), "peak": round(self._peak, 6),
            "threshold": self.on, "off_threshold": self.off,
            "snippets": [first.index, last.index], "frames": [first.first_frame, last.last_frame],
            "time": [iso(first.first_ts), iso(end_ts)],
            "duration_s": 0.0 if end_ts is None else round(max(0.0, end_ts - first.first_ts), 3),
            "position_s": None if first.first_position is None else
            [round(first.first_position, 3), None if end_ts is None or last.last_position is None
             else round(last.last_position, 3)],
            "model": self.model, "snapshot": self._snapshot, **self._heat.fields(),
            "bundle_sha": self.bundle_sha[:16] if self.bundle_sha else None,
        }

    def _save_snapshot(self, keyframe: np.ndarray | None) -> str | None:
        if self.snapshot_dir is None or keyframe is None:
            return None
        return write_snapshot(self.snapshot_dir, self._alert_id, keyframe, self._heat.heat, self.camera)


def write_snapshot(directory: Path, alert_id: str, keyframe: np.ndarray, heat, camera: str) -> str | None:
    """`<alert id>.jpg` in `directory`: the keyframe with the heat drawn over it -> its path;
    None (logged) when it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = (directory / f"{alert_id}.jpg").resolve()
        if not cv2.imwrite(str(path), draw_overlay(keyframe, heat), [cv2.IMWRITE_JPEG_QUALITY, 85]):
            raise OSError("OpenCV could not write it")
        return str(path)
    except OSError as exc:
        log.warning("%s: snapshot not written to %s: %s", camera, directory, exc)
        return None
