"""The alert worker: one thread that locates alerts and publishes their messages, so that the
scoring thread never waits for either.

Why: locating a snippet re-runs the spatial and temporal graphs over one variant per patch
(50 at the published size, 49 patches: seconds on a CPU). On the scoring thread no camera was
scored meanwhile. Now the scoring thread decides (the alert policy), hands over what an event
needs (the contexts of the snippets to locate, the keyframe for the snapshot) and goes on.

This thread does its jobs one at a time, in the order they came: a camera's `start`, the
extensions located after it and its `end` keep their order, and each message is stored before
it is sent (the `publish` callback, the engine's). Jobs are never dropped, except extensions:

- a `start` is always located (every snippet of the run that started it);
- an extension (a snippet that keeps the alert going) is located when the thread keeps up:
  at most one extension per camera waits, and a newer one takes its place (`skipped` counts
  those never located). The `end` then carries the mean heat of the snippets located, and
  `located` says how many they were (docs/MESSAGES.md);
- and extensions take at most EXTENSION_SHARE of this thread's time: after one located in D
  seconds the camera's next waits D x (1 / share - 1), skipped meanwhile. At the published
  size on a CPU a located snippet is seconds of both cores, which a long alert would
  otherwise take from scoring all along; a small bundle locates in milliseconds and so
  locates every extension.

So the queue holds at most the alert events themselves plus one extension per camera, and
handing over never blocks. `close(timeout)` drains it (SIGTERM, SIGINT, end of the files):
everything still queued is published, located while the time lasts; past it, a graph run in
progress is cut short (its own RunOptions) and the rest goes out with the heat it has.

Other work that must stay off the scoring thread (a learning camera's calibration fit) comes
as a function (`call`), run in turn with the rest, its result in a Future.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from monitor.alerts.localisation import AlertHeat, Localiser, SnippetContext, mean_heat
from monitor.alerts.policy import write_snapshot

log = logging.getLogger("monitor.alerts.worker")

EXTENSION_SHARE = 0.25   # of the alert thread's time, at most, for locating extensions


@dataclass
class _Job:
    kind: str                      # "start", "extend", "end", "call"
    camera: str = ""
    event: dict | None = None
    contexts: list = field(default_factory=list)   # SnippetContext or None, to locate
    keyframe: np.ndarray | None = None             # a start's snapshot frame
    call: object = None                            # kind "call": (function, Future)


@dataclass
class _Open:
    """An open alert, on the worker's side: its heat so far, snapshot and snippets located."""
    heat: AlertHeat = field(default_factory=AlertHeat)
    snapshot: str | None = None
    located: int = 0
    next_extension: float = 0.0   # monotonic time before which extensions are not located


class AlertWorker:
    """`publish(camera, event)` stores and sends one alert message; `localiser` locates (its
    graphs run under `run_options`, which close() uses to cut a run short); `snapshots`: the
    folder for the start's JPEG with the heat drawn over it (None: none)."""

    def __init__(self, localiser: Localiser | None, publish, snapshots: str | Path | None = None,
                 run_options: ort.RunOptions | None = None, extension_share: float = EXTENSION_SHARE):
        self.localiser = localiser if localiser is not None and localiser.available else None
        self.publish = publish
        self.snapshots = Path(snapshots) if snapshots else None
        self.run_options = run_options
        self.extension_share = extension_share
        self.skipped = 0            # extensions never located (a newer one took their place, or resting)
        self._jobs: deque[_Job] = deque()
        self._waiting: dict[str, _Job] = {}   # camera -> its extension still queued
        self._open: dict[str, _Open] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._hurry = False         # past close()'s deadline: publish without locating
        self._thread: threading.Thread | None = None

    # -- the scoring thread hands over (none of these waits) --------------------------------
    def start(self, camera: str, event: dict, contexts: list, keyframe: np.ndarray | None) -> None:
        """An alert started: locate `contexts` (the snippets of its run), write its snapshot, publish."""
        self._put(_Job("start", camera, event, list(contexts), keyframe))

    def extend(self, camera: str, context: SnippetContext | None) -> None:
        """A snippet kept the camera's alert going: add its heat if the worker keeps up."""
        if self.localiser is None or context is None:
            return
        with self._cond:
            waiting = self._waiting.get(camera)
            if waiting is not None:           # behind: the newest snippet takes its place
                waiting.contexts = [context]
                self.skipped += 1
                return
            job = self._waiting[camera] = _Job("extend", camera, contexts=[context])
            self._put(job)

    def end(self, camera: str, event: dict) -> None:
        """The camera's alert ended: publish with the mean heat of every snippet located."""
        self._put(_Job("end", camera, event))

    def call(self, function) -> Future:
        """Run `function()` in turn with the alert jobs -> a Future of its result."""
        future: Future = Future()
        self._put(_Job("call", call=(function, future)))
        return future

    @property
    def queued(self) -> int:
        return len(self._jobs)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in progress."""
        with self._cond:
            return not self._jobs and not self._busy

    def close(self, timeout: float = 5.0) -> bool:
        """Drain: every queued job done, located while `timeout` lasts, then published without
        more locating; the thread ends. False if it did not end in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            if self._thread is None:
                return True
            if not self._cond.wait_for(lambda: not self._jobs and not self._busy, timeout):
                left = len(self._jobs)
                self._hurry = True
                if self.run_options is not None:
                    self.run_options.terminate = True   # a located snippet in progress stops now
                log.warning("alerts: %d alert job(s) still queued at shutdown: published without locating them", left)
        self._thread.join(max(1.0, timeout))
        return not self._thread.is_alive()

    def _put(self, job: _Job) -> None:
        with self._cond:
            if self._closing and self._thread is not None and not self._thread.is_alive():
                log.error("alerts: a %s job came after the worker stopped; done here", job.kind)
                self._do(job)
                return
            self._jobs.append(job)
            if self._thread is None:   # started with the first job: an engine that never alerts has none
                self._thread = threading.Thread(target=self._loop, name="alerts", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    # -- the worker thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._closing)
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                if self._waiting.get(job.camera) is job:
                    del self._waiting[job.camera]
                self._busy = True
            try:
                self._do(job)
            except Exception:   # one job's trouble must not stop the others
                log.exception("alerts: %s job of %s failed", job.kind, job.camera or "the monitor")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _do(self, job: _Job) -> None:
        if job.kind == "call":
            function, future = job.call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function())
                except BaseException as exc:
                    future.set_exception(exc)
            return
        if job.kind == "start":
            alert = self._open[job.camera] = _Open()
            heat, alert.located = self._locate(job.contexts)
            alert.heat.add(heat)      # the run's mean counts as one, as each extension does
            if self.snapshots is not None and job.keyframe is not None:
                try:   # no snapshot is better than no alert
                    alert.snapshot = write_snapshot(self.snapshots, job.event["alert_id"], job.keyframe,
                                                    alert.heat.heat, job.camera)
                except Exception:
                    log.exception("%s: snapshot of %s not written", job.camera, job.event.get("alert_id"))
        alert = self._open.get(job.camera)
        if job.kind == "extend":
            if alert is None:
                return
            began = time.monotonic()
            if began < alert.next_extension:   # resting: extensions have had their share
                with self._cond:
                    self.skipped += 1
                return
            heat, located = self._locate(job.contexts)
            alert.heat.add(heat)
            alert.located += located
            spent = time.monotonic() - began
            alert.next_extension = time.monotonic() + spent * (1 / self.extension_share - 1)
            return
        event = job.event
        if alert is not None:
            event.update(alert.heat.fields())
            event["snapshot"] = alert.snapshot
        event["located"] = alert.located if alert is not None and self.localiser is not None else None
        if job.kind == "end":
            self._open.pop(job.camera, None)
        self.publish(job.camera, event)

    def _locate(self, contexts: list) -> tuple:
        """(mean heat, how many snippets it covers) of the contexts; (None, 0) when there is
        nothing to locate, or no time left."""
        if self.localiser is None or self._hurry:
            return None, 0
        try:
            return mean_heat(self.localiser, contexts)
        except Exception as exc:
            if self._hurry:
                return None, 0
            log.error("alerts: locating failed (%s); the alert goes out without that snippet's heat", exc)
            return None, 0
