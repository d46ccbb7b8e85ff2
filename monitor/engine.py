"""The live engine: ready snippets of every camera batched into one backbone call, the
spatial head once per snippet (its output cached in the camera's window), the temporal head
over each camera's sliding window of the last W snippets, the alert policy, and the messages.

Threads: one reader per camera (monitor.video.sources) assembles snippets and queues them here;
scoring workers run the graphs and the alert policy (bundle.workers of them: on the CPU one
per core, each batch on one thread, side by side; the windows and reports in batch order); one
alert worker (monitor.alerts.worker) locates alerts, writes their snapshots and publishes their
messages, and fits a learning camera's calibration, so that none of that holds up scoring; one
housekeeping thread publishes the status heartbeat and camera up/down events, so that they
keep coming while a long batch runs. When scoring
falls behind, a live camera's queue drops its oldest whole snippet (counted) rather than let
latency grow; a file that is not paced waits instead, since it is not live.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import statistics
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from monitor.alerts.clips import CameraClips, ClipWriter, clip_settings
from monitor.alerts.localisation import Localiser, SnippetContext
from monitor.alerts.worker import AlertWorker
from monitor.alerts import calibration as calib
from monitor.alerts.policy import AlertPolicy, SnippetInfo
from monitor.model.bundle import Bundle
from monitor.config import CameraConfig, Config
from monitor.model.fingerprint import bundle_sha
from monitor.model.manifest import BundleError
from monitor.video.preprocess import Geometry, Preprocessor, pixels_to_clips
from monitor.messages.publisher import Publisher, iso
from monitor.video.snippets import RawSnippet, SnippetAssembler
from monitor.redaction import redact
from monitor.video.credentials import Credentials
from monitor.video.sources import ENDED, RECONNECTING, STALLED, STREAMING, CameraSource, kind_of

log = logging.getLogger("monitor.engine")
# A camera whose graphs give NaN or infinite features or scores: nothing of it is alerted on
# until finite scores come back; the other cameras are not touched.
FAULTY = "faulty"
# At a stop, how long the alert worker may go on locating what is queued before it publishes
# the rest without (every event still goes out).
ALERT_DRAIN_S = 1.0


# ----------------------------------------------------------------------------- sliding window
# Shared by the live engine and `score-features --streaming`, so that both score alike.

@dataclass
class WindowStep:
    """One push: the window [T, C, F] to score, and what it holds (meta of each snippet)."""
    window: np.ndarray
    metas: tuple
    pushed: int  # pushes so far, this one included


class SlidingWindow:
    """One camera's last W fused snippets [C, F] and what the temporal head reports for them.

    The temporal head sees the whole window; the score reported is that of the newest
    snippet, or with a look-ahead of d, of snippet t - d, which then has d snippets of future
    context (at the cost of d snippets of latency). Only the last d + 1 positions are ever
    read (`reported_positions`), so only they are scored. Several pushes may be scored together
    (a camera that is behind has several snippets in a batch): each step keeps its own view."""

    def __init__(self, window: int, lookahead: int = 0):
        if window < 1:
            raise ValueError(f"window must be at least 1 snippet, got {window}")
        if not 0 <= lookahead < window:
            raise ValueError(f"look-ahead must lie in 0..{window - 1} (the window is {window}), got {lookahead}")
        self.window = window
        self.lookahead = lookahead
        self._features: deque = deque(maxlen=window)
        self._meta: deque = deque(maxlen=window)
        self._last: tuple[WindowStep, np.ndarray] | None = None
        self._reported = 0  # snippets reported so far (by position since the start)
        self._pushed = 0

    def __len__(self) -> int:
        return len(self._features)

    def push(self, fused: np.ndarray, meta) -> WindowStep:
        """Add the newest snippet -> the step whose window the temporal head must score."""
        self._features.append(np.asarray(fused, np.float32))
        self._meta.append(meta)
        self._pushed += 1
        return WindowStep(np.stack(self._features), tuple(self._meta), self._pushed)

    def report(self, step: WindowStep, scores: np.ndarray) -> list[tuple[object, float]]:
        """Scores [T] of a step's window (steps in push order) -> [(meta, score)] to report
        now: the snippet d before the newest, none until there is one."""
        scores = np.asarray(scores, np.float32)
        self._last = (step, scores)
        position = step.pushed - 1 - self.lookahead
        if position < self._reported:
            return []
        self._reported = position + 1
        k = len(step.metas) - 1 - self.lookahead
        return [(step.metas[k], float(scores[k]))]

    @property
    def last_step(self) -> WindowStep | None:
        """The step last scored (the one `flush` reports from)."""
        return None if self._last is None else self._last[0]

    def flush(self) -> list[tuple[object, float]]:
        """At the end of a stream: the last d snippets, scored by the last window."""
        if self._last is None:
            return []
        step, scores = self._last
        n = len(step.metas)
        out = [(step.metas[n - (step.pushed - p)], float(scores[n - (step.pushed - p)]))
               for p in range(max(self._reported, step.pushed - n), step.pushed)]
        self._reported = step.pushed
        return out


def reported_positions(length: int, lookahead: int = 0) -> np.ndarray:
    """The positions of a window of `length` that SlidingWindow.report and flush read with a
    look-ahead of d: the last d + 1."""
    return np.arange(max(0, length - 1 - lookahead), length)


def score_windows(scores_at, windows: list[np.ndarray], lookahead: int = 0) -> list[np.ndarray]:
    """Windows [T_i, C, F] -> scores [T_i] each at the positions a SlidingWindow with this
    look-ahead reads (reported_positions), NaN elsewhere. `scores_at(batch, positions)` is
    Bundle.scores_at; one call per distinct length (windows of equal length, from different
    cameras, share the call)."""
    out: list[np.ndarray | None] = [None] * len(windows)
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_length.setdefault(len(w), []).append(i)
    for length, indices in by_length.items():
        wanted = reported_positions(length, lookahead)
        scores = scores_at(np.stack([windows[i] for i in indices]), wanted)
        for row, i in zip(scores, indices):
            out[i] = np.full(length, np.nan, np.float32)
            out[i][wanted] = row
    return out


def stream_scores(bundle: Bundle, crops: np.ndarray, patches: np.ndarray | None,
                  window: int | None = None, lookahead: int = 0) -> np.ndarray:
    """Score one video's features [T, C, F] (+ [T, ΣP, F]) as the live engine would, one
    snippet at a time through a SlidingWindow -> [T] float32."""
    from monitor.model.offline import fuse_all
    fused = fuse_all(bundle, crops, patches)
    sliding = SlidingWindow(window or bundle.manifest.window, lookahead)
    out = np.full(len(fused), np.nan, np.float32)
    for t in range(len(fused)):
        step = sliding.push(fused[t], t)
        scores = score_windows(bundle.scores_at, [step.window], lookahead)[0]
        for index, score in sliding.report(step, scores):
            out[index] = score
    for index, score in sliding.flush():
        out[index] = score
    return out


def _context(reported, step: WindowStep | None) -> SnippetContext | None:
    """A reported snippet's features and the window its score came from (to locate it)."""
    if reported.features is None or step is None:
        return None
    position = next((i for i, meta in enumerate(step.metas) if meta is reported), None)
    return None if position is None else SnippetContext(step.window, position, *reported.features)


def synthetic_model_warning(manifest, name: str, cameras) -> str | None:
    """What to tell the operator when a model trained on synthetic footage only (the demo)
    watches a source that is not the synthetic camera; None otherwise."""
    real = [c.name for c in cameras if kind_of(c.url) != "synthetic"]
    if not manifest.synthetic_only or not real:
        return None
    return (f"model {name} was trained on synthetic footage only: its scores on {', '.join(real)} "
            f"are not meaningful; expect false alerts")


# ----------------------------------------------------------------------------- the graphs of a batch
# Shared by the engine and `bench` (which times the same batches through the graphs alone).

# A batch holds at most this many bytes of backbone input (pixels as uint8), so that a large
# backbone (I3D: 59 clips of 16 x 224 x 224, 142 MB a snippet) is fed a snippet at a time
# while a small one (the demo: 1.8 MB) batches up to 17 cameras' snippets into one call. On
# a GPU the graphs' working memory grows with the batch, and the engine takes it at start
# (warm_up), so this also bounds the monitor's memory: scoring workers running side by side
# share the bound. (On a CPU the backbone runs a batch in cache-sized pieces,
# Bundle.backbone_pieces, so there its working memory is a piece's.)
MAX_BATCH_BYTES = 32 << 20


def batch_limit(manifest, max_batch: int, workers: int = 1) -> int:
    """Snippets per backbone call: `max_batch`, within MAX_BATCH_BYTES of uint8 input for
    all `workers` calls at once."""
    return max(1, min(max_batch, MAX_BATCH_BYTES // workers // manifest.snippet_bytes()))


def prepare_clips(preprocessor: Preprocessor, bundle: Bundle, frames: np.ndarray) -> tuple:
    """One snippet's frames -> the backbone's input for its crops and patches, in the form the
    bundle's graph takes (uint8 pixels, or float clips for a float-input bundle)."""
    crops, patches = preprocessor.pixels(frames)
    if bundle.takes_pixels:
        return crops, patches
    return pixels_to_clips(crops), None if patches is None else pixels_to_clips(patches)


def fused_features(bundle: Bundle, prepared: list[tuple], run=None) -> tuple[np.ndarray, list]:
    """Prepared snippets (prepare_clips) -> (fused crop features [n, C, F], each snippet's
    (crop features, patch features) or None for stage 1): one backbone call for all of them
    (two when patches and crops differ in size), the spatial head once each."""
    run = run or (lambda graph, *inputs: graph(*inputs))
    m = bundle.manifest
    c, p, n = m.crops, sum(m.patches), len(prepared)
    crop_clips = np.concatenate([crops for crops, _ in prepared])
    if m.stage <= 1:
        return run(bundle.backbone, crop_clips).reshape(n, c, -1), [None] * n
    patch_clips = np.concatenate([patches for _, patches in prepared])
    if patch_clips.shape[1:] == crop_clips.shape[1:]:
        features = run(bundle.backbone, np.concatenate([crop_clips, patch_clips]))
        crop_f, patch_f = features[: n * c], features[n * c:]
    else:  # patches of another size than crops: one call per clip size
        crop_f = run(bundle.backbone, crop_clips)
        patch_f = run(bundle.backbone, patch_clips)
    crop_f, patch_f = crop_f.reshape(n, c, -1), patch_f.reshape(n, p, -1)
    return run(bundle.fuse, crop_f, patch_f), list(zip(crop_f, patch_f))


# ----------------------------------------------------------------------------- cameras

@dataclass
class Reported:
    """What the window keeps of a snippet: its range, the frame a snapshot would show, and
    until it is reported its crop and patch features (to locate it if it alerts)."""
    info: SnippetInfo
    keyframe: np.ndarray | None
    received: float = 0.0   # wall-clock time its last frame was read (latency)
    features: tuple[np.ndarray, np.ndarray] | None = None  # until reported: to locate it


@dataclass
class CameraState:
    config: CameraConfig
    source: CameraSource
    assembler: SnippetAssembler
    window: SlidingWindow
    policy: AlertPolicy
    # The last reported snippets, as many as an alert's start may need: (context to locate it,
    # or None; keyframe for the snapshot, or None), handed to the alert worker with the start.
    recent: deque = field(default_factory=deque)
    clips: CameraClips | None = None
    origin: str = calib.BUNDLE                      # where its levels come from (calibration.BUNDLE, ...)
    calibration: calib.Calibration | None = None
    learner: calib.Learner | None = None            # while it learns its calibration
    fitting: Future | None = None                   # its calibration being fitted (alert worker)
    pending: deque = field(default_factory=deque)
    dropped: int = 0
    scored: deque = field(default_factory=lambda: deque(maxlen=64))      # publish times
    latencies: deque = field(default_factory=lambda: deque(maxlen=32))   # ms
    down_reported: bool = False
    flushed: bool = False
    fault: str = ""                 # why the camera is faulty ("" when it is not)
    fault_since: float = 0.0
    faulty_snippets: int = 0        # snippets whose features or score were not finite

    @property
    def name(self) -> str:
        return self.config.name

    def snippets_per_s(self, now: float) -> float:
        recent = [t for t in self.scored if t > now - 10.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


class Engine:
    """`calibrations` (alerts.calibration_store.CalibrationStore): cameras use their stored
    calibration for this bundle, and those with `learn_s` learn one and store it;
    `false_alerts(camera)`: end messages of the camera's alerts marked false, whose scores a
    calibration learnt here takes as normal footage; `learn_only`: every camera only learns,
    until the caller takes what it scored (the calibrate command)."""

    def __init__(self, config: Config, bundle: Bundle, publisher: Publisher, event_log=None,
                 calibrations=None, false_alerts=None, learn_only: bool = False):
        m = bundle.manifest
        if not bundle.has_backbone:
            raise BundleError(f"{bundle.path}: has no backbone graph (backbone.onnx); the live monitor needs one "
                              f"to turn frames into features (python -m export --backbone ... --out {bundle.path})")
        if m.stage == 0:
            raise BundleError(f"{bundle.path}: is a backbone-only bundle (stage 0) with no SSRL head to score with; "
                              f"export one with python -m export --checkpoint ... --backbone ... --out DIR")
        self.config = config
        self.bundle = bundle
        self.publisher = publisher
        self.event_log = event_log  # the EventStore (monitor.messages.event_store), or None
        # Alert ids an operator can type: <camera>-<n>, n unique per monitor across restarts.
        self._alert_numbers = None if event_log is None else event_log.alert_numbers(publisher.monitor_id)
        self.geometry = Geometry.from_manifest(m)
        self.preprocessor = Preprocessor(self.geometry)
        # Locating runs on the alert worker under its own RunOptions: stop() cuts scoring short,
        # the worker's drain (close_alerts) decides how long locating may still take.
        self._locate_options = ort.RunOptions()
        self.localiser = Localiser(bundle, self.geometry.frame_size,
                                   run=lambda graph, *inputs: graph(*inputs, run_options=self._locate_options))
        self.alert_worker = AlertWorker(self.localiser, self._publish_alert, config.log.snapshots, self._locate_options)
        self.window = config.model.window or m.window
        self.lookahead = config.model.lookahead
        SlidingWindow(self.window, self.lookahead)  # refuse a bad window / look-ahead now
        self.model_info = {"name": str(m.source.get("name") or bundle.path.name), "stage": m.stage}
        self.model_warning = synthetic_model_warning(m, self.model_info["name"], config.cameras)
        self.bundle_sha = bundle_sha(bundle.path, m)
        self.calibrations = calibrations
        self.false_alerts = false_alerts
        self.learn_only = learn_only
        self.started = time.time()
        self.alerts_today = 0
        self._today = _dt.datetime.now(_dt.timezone.utc).date()
        self._cond = threading.Condition()
        # Scoring workers (bundle.workers, one per core on the CPU) run the backbone and the
        # spatial graph on batches side by side; what follows (windows, temporal graph,
        # reports) runs one batch at a time, in the order the batches were taken, so each
        # camera's snippets are reported in order (_score).
        self.workers = bundle.workers
        self._batches_taken = 0     # numbers handed to batches as they are taken
        self._batches_reported = 0  # the batch whose turn it is to be reported
        self._scored_batches: dict[int, tuple | BaseException] = {}  # scored, waiting for their turn
        self._reporting = threading.RLock()  # the report stage, and flushing cameras
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._run_options = ort.RunOptions()
        self._threads: list[threading.Thread] = []
        # When each scoring worker last went round its loop (a batch done, or 0.25 s idle): a
        # worker that stops going round is hung, and the watchdog pings stop (scoring_alive).
        self._beats: dict[str, float] = {}
        self.error: BaseException | None = None
        self.batches = 0
        self.snippets_scored = 0
        self.shared_batches = 0  # batches that held snippets of more than one camera
        self.batch_sizes: deque = deque(maxlen=256)
        self.clip_writer = ClipWriter.for_config(config.alerts)  # None without [alerts] clips
        self.cameras: list[CameraState] = [self._camera(c) for c in config.cameras]
        self.max_batch = batch_limit(m, config.engine.max_batch, bundle.workers)

    def _camera(self, c: CameraConfig) -> CameraState:
        origin, settings, cal, learner = self._starting_levels(c)
        alert_ids = None if self._alert_numbers is None else (lambda: f"{c.name}-{self._alert_numbers.take()}")
        # No snapshot folder for the policy: the alert worker writes snapshots, with the heat it finds.
        policy = AlertPolicy(c.name, settings, self.model_info, None, alert_ids=alert_ids, bundle_sha=self.bundle_sha)
        policy.armed = learner is None
        assembler = SnippetAssembler(c.name, self.geometry.snippet_length, self.config.engine.frame_stride,
                                     keep_keyframe=bool(self.config.log.snapshots))  # for snapshots only
        source = CameraSource(c.name, c.url, transport=c.transport, loop=c.loop, pace=c.pace, fps=c.fps,
                              stall_timeout_s=c.stall_timeout_s, backoff_initial_s=c.backoff_initial_s,
                              backoff_max_s=c.backoff_max_s, max_frame_pixels=c.max_frame_pixels,
                              credentials=Credentials(c.username, c.password_env, c.password_file))
        state = CameraState(c, source, assembler, SlidingWindow(self.window, self.lookahead), policy,
                            origin=origin, calibration=cal, learner=learner)
        keep = calib.MAX_MIN_SNIPPETS if learner else policy.settings.min_snippets
        state.recent = deque(maxlen=max(1, keep, policy.settings.min_snippets))
        if self.clip_writer is not None:
            state.clips = CameraClips(c.name, clip_settings(settings), self.clip_writer)
        source.on_frame = lambda frame, s=state: self._on_frame(s, frame)
        source.on_gap = lambda reason, s=state: s.assembler.reset()
        return state

    def _starting_levels(self, c: CameraConfig):
        """(origin, resolved settings, calibration, learner) of a camera at start: levels set in
        the configuration win; else its stored calibration for this bundle; else, with
        learn_s, it learns (no alerts until then); else the bundle's levels."""
        m = self.bundle.manifest
        base = self.config.alert_settings(c)
        bundle_levels = base.resolved(m.threshold, m.min_snippets)
        stride = self.config.engine.frame_stride
        if self.learn_only:
            return calib.LEARNING, bundle_levels, None, calib.Learner(None, stride)
        if base.on is not None:
            return calib.CONFIG, bundle_levels, None, None
        cal = self.calibrations.load(c.name, self.bundle_sha) if self.calibrations is not None else None
        if cal is not None:
            if cal.smoothing != base.smoothing or base.min_snippets not in (None, cal.min_snippets):
                log.warning("%s: its calibration (%s) was learnt for smoothing %d and %d snippet(s); the "
                            "configuration says smoothing %d%s: not used, calibrate again", c.name,
                            self.calibrations.path(c.name, self.bundle_sha), cal.smoothing, cal.min_snippets,
                            base.smoothing, "" if base.min_snippets is None else f", {base.min_snippets} snippet(s)")
            else:
                log.info("%s: calibrated, %s", c.name, cal.summary())
                return calib.CALIBRATED, calib.settings_for(base, cal), cal, None
        if c.learn_s > 0:
            log.info("%s: learning its calibration from %.0f s of footage before it alerts", c.name, c.learn_s)
            return calib.LEARNING, bundle_levels, None, calib.Learner(c.learn_s, stride)
        return calib.BUNDLE, bundle_levels, None, None

    def _fit(self, cam: CameraState) -> None:
        """A learning camera has seen enough: its calibration is fitted and stored on the alert
        worker (a long learning period is a long fit), and applied by _fitted on this thread;
        until then the camera goes on without alerting (a file waits: _held)."""
        c, footage = cam.config, cam.learner.footage("learnt live")
        base, sources = self.config.alert_settings(c), [cam.source.display]

        def fit() -> calib.Calibration | None:
            marked = self.false_alerts(c.name) if self.false_alerts is not None else []
            try:
                cal = calib.calibrate_camera(footage, marked, camera=c.name, bundle_sha=self.bundle_sha,
                                             settings=base, manifest=self.bundle.manifest, sources=sources)
            except calib.CalibrationError as exc:
                log.warning("%s: cannot calibrate yet (%s); learning %.0f s more", c.name, exc, c.learn_s)
                return None
            if self.calibrations is not None:
                try:
                    path = self.calibrations.save(cal)
                    log.info("%s: calibration stored in %s", c.name, path)
                except OSError as exc:
                    log.error("%s: calibration not stored in %s: %s", c.name, self.calibrations.root, exc)
            return cal

        cam.fitting = self.alert_worker.call(fit)
        cam.fitting.add_done_callback(lambda _: self._wake())

    def _fitted(self, cam: CameraState) -> None:
        """A fit is done (scoring thread): alert from now on, or learn longer if it could not fit."""
        future, cam.fitting = cam.fitting, None
        try:
            cal = future.result()
        except Exception:
            log.exception("%s: calibration failed; learning longer", cam.name)
            cal = None
        if cal is None:
            cam.learner.learn_s += cam.config.learn_s   # e.g. footage broken into short stretches
            return
        cam.policy.retune(calib.settings_for(self.config.alert_settings(cam.config), cal))
        cam.policy.armed = True
        cam.calibration, cam.origin, cam.learner = cal, calib.CALIBRATED, None

    def _held(self, cam: CameraState) -> bool:
        """A file waits while its calibration is fitted, so that it alerts from the snippet
        after its learning period, whatever the fit takes; a live camera goes on unarmed."""
        return cam.fitting is not None and not cam.fitting.done() and not cam.source.live

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def calibration_status(self, cam: CameraState) -> dict:
        """Where a camera's levels come from, for the status messages and the dashboard."""
        cal, learner = cam.calibration, cam.learner
        base = self.config.alert_settings(cam.config)
        return {"source": cam.origin, "threshold": cam.policy.on, "off_threshold": cam.policy.off,
                "min_snippets": cam.policy.settings.min_snippets,
                "target_per_day": cal.target_per_day if cal else (base.target_per_day if learner else None),
                "estimated_per_day": cal.estimated_per_day if cal else None,
                "footage_s": round(cal.footage_s if cal else learner.footage_s, 1) if (cal or learner) else None,
                "learn_s": learner.learn_s if learner else None}

    # ------------------------------------------------------------------ info
    def info(self) -> dict:
        """What a dashboard needs to know before the first status message."""
        return {
            "monitor": self.publisher.monitor_id, "endpoint": self.publisher.endpoint,
            "model": {**self.model_info, "providers": self.bundle.providers, "window": self.window,
                      "warning": self.model_warning, "lookahead": self.lookahead, "path": str(self.bundle.path)},
            "status_interval": self.config.monitor.status_interval,
            "cameras": [{"camera": c.name, "source": c.source.display, "threshold": c.policy.on,
                         "off_threshold": c.policy.off, "calibration": self.calibration_status(c)}
                        for c in self.cameras],
        }

    # ------------------------------------------------------------------ reader side
    def _on_frame(self, cam: CameraState, frame) -> None:
        if cam.clips is not None:
            cam.clips.push(frame.index, frame.ts, frame.image)
        # Preprocessing runs here, on the camera's reader thread: the cameras' snippets are
        # prepared side by side while the scoring workers run the graphs. Each frame is resized
        # as it comes (the snippet's frames would be resized one by one anyway), the rest once
        # the snippet is complete.
        snippet = cam.assembler.push(frame, self.preprocessor.resize_frame)
        if snippet is None:
            return
        snippet.prepared = prepare_clips(self.preprocessor, self.bundle, snippet.frames)
        with self._cond:
            if cam.source.live:
                while len(cam.pending) >= self.config.engine.max_pending:
                    cam.pending.popleft()  # stay live: the oldest whole snippet goes
                    cam.dropped += 1
            else:
                while len(cam.pending) >= self.config.engine.max_pending and not self._stop.is_set():
                    self._cond.wait(0.2)  # a file that is not paced waits for the engine
            cam.pending.append(snippet)
            self._cond.notify_all()

    # ------------------------------------------------------------------ lifecycle
    def warm_up(self) -> None:
        """A run of every graph at the largest batch the engine can form (every camera's queue
        full), so that the first snippets do not pay the set-up and the memory the graphs need
        is taken now, at start, not the first time the cameras fall behind."""
        g = self.geometry
        n = max(1, min(self.max_batch, len(self.cameras) * self.config.engine.max_pending))
        frames = np.zeros((g.snippet_length, g.frame_size[1], g.frame_size[0], 3), np.uint8)
        prepared = [prepare_clips(self.preprocessor, self.bundle, frames)] * n
        # Each worker's run takes its own working memory: warm them side by side.
        others = [threading.Thread(target=fused_features, args=(self.bundle, prepared, self._run), daemon=True)
                  for _ in range(self.workers - 1)]
        for thread in others:
            thread.start()
        fused, _ = fused_features(self.bundle, prepared, self._run)
        for thread in others:
            thread.join()
        windows = [np.repeat(fused[:1], self.window, axis=0)] * max(1, min(n, len(self.cameras)))
        score_windows(self._scores_at, windows, self.lookahead)

    def start(self) -> "Engine":
        loops = [(self._score_loop, "engine" if self.workers == 1 else f"engine-{i}") for i in range(self.workers)]
        for target, name in loops + [(self._housekeeping_loop, "status")]:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        for cam in self.cameras:
            cam.source.start()
        return self

    def stop(self) -> None:
        """Stop reading and scoring; a graph run in progress is told to terminate."""
        self._stop.set()
        self._run_options.terminate = True
        for cam in self.cameras:
            cam.source.stop()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float = 1.5) -> bool:
        """Wait for the engine's and the readers' threads; False if one is still running (a
        read blocked in a dead stream), in which case the process must not wait for it."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for cam in self.cameras:
            cam.source.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads) and not any(c.source.alive for c in self.cameras)

    def close_alerts(self) -> None:
        """End open alerts (logged and published) and finish their clips as the monitor stops:
        the alert worker drains (everything queued is published, located while ALERT_DRAIN_S lasts)."""
        for cam in self.cameras:
            for event in cam.policy.close("shutdown"):
                self._hand_over(cam, event)
            if cam.clips is not None:
                cam.clips.finish_all()
        if not self.alert_worker.close(ALERT_DRAIN_S):
            log.warning("alerts: the alert worker did not finish in time; the last alert messages may be missing")
        if self.clip_writer is not None and not self.clip_writer.close():
            log.warning("clips: the writer did not finish in time; the last clip may be cut short")

    def loop_age_s(self) -> float | None:
        """Seconds since the slowest scoring worker last went round its loop (None before any
        has): a batch's time at most while the engine works, far more when it is hung."""
        beats = list(self._beats.values())
        return None if not beats else time.monotonic() - min(beats)

    def scoring_alive(self, within_s: float) -> bool:
        """Every scoring worker has gone round its loop within `within_s`, and none has died."""
        age = self.loop_age_s()
        workers = [t for t in self._threads if t.name in self._beats]
        return (age is not None and age <= within_s and len(workers) == self.workers
                and all(t.is_alive() for t in workers))

    def wait(self, timeout: float | None = None) -> bool:
        """True once every source has ended (files not looped) and everything is scored."""
        return self._finished.wait(timeout)

    def _run(self, graph, *inputs):
        """A bundle graph under the engine's RunOptions, which stop() uses to cut a run short."""
        return graph(*inputs, run_options=self._run_options)

    def _scores_at(self, windows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Bundle.scores_at under the engine's RunOptions (score_windows calls it)."""
        return self._run(self.bundle.scores_at, windows, positions)

    # ------------------------------------------------------------------ scoring thread
    def _score_loop(self) -> None:
        me = threading.current_thread().name
        try:
            while not self._stop.is_set():
                self._beats[me] = time.monotonic()
                number, batch = self._next_batch()
                if any(c.fitting is not None and c.fitting.done() for c in self.cameras):
                    with self._reporting:   # the report stage owns the policies
                        for cam in self.cameras:
                            if cam.fitting is not None and cam.fitting.done():
                                self._fitted(cam)
                if batch:
                    self._score(number, batch)
                elif self._all_ended() and self.alert_worker.idle:   # every alert located and published
                    self._finished.set()
                    return
        except Exception as exc:
            if self._stop.is_set():
                return  # a run told to terminate raises; that is the stop working
            self.error = exc
            log.exception("scoring failed")
            self._finished.set()

    def _all_ended(self) -> bool:
        """Flush every camera whose source has ended and whose snippets are all scored (its
        last d look-ahead snippets get their scores); True once that is every camera."""
        with self._cond:
            if self._batches_reported < self._batches_taken:
                return False  # another worker's batch is still on its way
            done = [c for c in self.cameras if c.source.state()[0] == ENDED and not c.pending]
        with self._reporting:
            for cam in done:
                self._flush_camera(cam)
        return bool(self.cameras) and len(done) == len(self.cameras)

    def _ready(self) -> int:
        return sum(len(c.pending) for c in self.cameras if not self._held(c))

    def _next_batch(self) -> tuple[int, list[tuple[CameraState, RawSnippet]]]:
        """(the batch's number, the batch): the oldest snippets across cameras."""
        e = self.config.engine
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready() or self._stop.is_set(), timeout=0.25):
                return -1, []
            # A partial batch waits a little for other cameras' snippets, never for its own
            # camera; with several workers, for its share of the cameras.
            deadline = time.monotonic() + e.max_wait_ms / 1000.0
            live = sum(1 for c in self.cameras if c.source.state()[0] == STREAMING)
            while self._ready() < min(self.max_batch, -(-live // self.workers)) and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            batch = []
            while len(batch) < self.max_batch:
                heads = [c for c in self.cameras if c.pending and not self._held(c)]
                if not heads:
                    break
                cam = min(heads, key=lambda c: c.pending[0].received)  # oldest first, across cameras
                batch.append((cam, cam.pending.popleft()))
            number = -1
            if batch:
                number, self._batches_taken = self._batches_taken, self._batches_taken + 1
            self._cond.notify_all()  # room again for files that wait
        return number, batch

    def _score(self, number: int, batch: list[tuple[CameraState, RawSnippet]]) -> None:
        """Features of the batch, side by side with other workers; then whoever finds the next
        batch in order done reports it (and any after it that are), so no worker waits idle."""
        try:
            prepared = [s.prepared or prepare_clips(self.preprocessor, self.bundle, s.frames) for _, s in batch]
            fused, parts = fused_features(self.bundle, prepared, self._run)
            done = (batch, fused, parts)
        except BaseException as exc:  # reported in its turn, so that later batches are not held
            done = exc
        with self._cond:
            self._scored_batches[number] = done
        while True:
            with self._reporting:
                with self._cond:
                    done = self._scored_batches.pop(self._batches_reported, None)
                if done is None:
                    return
                try:
                    if isinstance(done, BaseException):
                        raise done
                    self._report_batch(*done)
                finally:
                    with self._cond:
                        self._batches_reported += 1
                        self._cond.notify_all()

    def _report_batch(self, batch: list[tuple[CameraState, RawSnippet]], fused, parts) -> None:
        n = len(batch)
        steps, kept = [], []
        for (cam, snippet), f, features in zip(batch, fused, parts):
            if not np.isfinite(f).all():  # kept out of the window, which it would poison for W snippets
                self._set_fault(cam, f"snippet {snippet.index}: the backbone or spatial graph gave non-finite features")
                continue
            info = SnippetInfo(snippet.index, snippet.first_frame, snippet.last_frame, snippet.first_ts, snippet.last_ts,
                               snippet.first_position, snippet.last_position)
            steps.append(cam.window.push(f, Reported(info, snippet.keyframe, snippet.received, features)))
            kept.append((cam, snippet))
        # Every camera's window has the engine's look-ahead.
        scores = score_windows(self._scores_at, [step.window for step in steps], self.lookahead)
        self.batches += 1
        self.shared_batches += len({id(cam) for cam, _ in batch}) > 1
        self.snippets_scored += n
        self.batch_sizes.append(n)
        for (cam, _), step, s in zip(kept, steps, scores):
            for reported, raw in cam.window.report(step, s):
                self._report(cam, reported, raw, step)

    def _flush_camera(self, cam: CameraState) -> None:
        if cam.flushed:
            return
        cam.flushed = True
        step = cam.window.last_step
        for reported, raw in cam.window.flush():
            self._report(cam, reported, raw, step)
        if cam.clips is not None:
            cam.clips.finish_all()  # its source ended: no more frames will come after an alert

    def _set_fault(self, cam: CameraState, why: str) -> None:
        cam.faulty_snippets += 1
        if not cam.fault:
            cam.fault_since = time.time()
            log.error("%s: faulty: %s; not alerting on it until its scores are finite again", cam.name, why)
        cam.fault = why

    def camera_state(self, cam: CameraState) -> tuple[str, str, float]:
        """The source's (state, reason, since), or faulty while the graphs give it non-finite values."""
        state = cam.source.state()
        if cam.fault and state[0] == STREAMING:
            return FAULTY, cam.fault, cam.fault_since
        return state

    def _report(self, cam: CameraState, reported: Reported, raw: float, step: WindowStep | None = None) -> None:
        info = reported.info
        if not math.isfinite(raw):
            self._set_fault(cam, f"snippet {info.index}: the temporal graph gave a score of {raw}")
            return
        if cam.fault:
            log.info("%s: scores are finite again (%d faulty snippets)", cam.name, cam.faulty_snippets)
            cam.fault = ""
        if cam.fitting is not None and cam.fitting.done():
            self._fitted(cam)
        cam.recent.append((_context(reported, step) if self.localiser.available else None, reported.keyframe))
        reported.features = None  # the context holds what locating needs now
        # The policy asks where(n) for the snippets that start (n: its run) or extend an alert;
        # here that only notes n: the alert worker locates them (monitor.alerts.worker).
        asked: list[int] = []
        score, events = cam.policy.update(info, raw, None, asked.append)
        if cam.learner is not None and cam.fitting is None:
            cam.learner.add(info, raw)
            if cam.learner.done:
                self._fit(cam)
        now = time.time()
        latency = (now - reported.received) * 1000.0
        cam.latencies.append(latency)
        cam.scored.append(now)
        if self.config.publish.scores:
            self.publisher.publish(f"score.{cam.name}", {
                "snippet": info.index, "frames": [info.first_frame, info.last_frame],
                "time": [iso(info.first_ts), iso(info.last_ts)], "score": round(score, 6),
                "raw_score": round(raw, 6), "threshold": cam.policy.on, "in_alert": cam.policy.in_alert,
                "latency_ms": round(latency, 1), "lookahead": self.lookahead}, camera=cam.name)
        for event in events:
            self._hand_over(cam, event, asked[0] if asked else 1)
        if asked and not events:   # a snippet that keeps the alert going
            self.alert_worker.extend(cam.name, cam.recent[-1][0])

    def _hand_over(self, cam: CameraState, event: dict, run: int = 1) -> None:
        """An alert event to the alert worker, which locates, stores and publishes it; its
        clip is started or ended here, while the camera's frame ring still holds its frames."""
        event["clip"] = cam.clips.on_alert(event) if cam.clips is not None else None
        if event["event"] == "start":
            snippets = list(cam.recent)[-run:]
            self.alert_worker.start(cam.name, event, [ctx for ctx, _ in snippets], snippets[0][1])
        else:
            self.alert_worker.end(cam.name, event)

    def _publish_alert(self, camera: str, event: dict) -> None:
        """Store and send one alert message (on the alert worker's thread)."""
        if event["event"] == "start":
            today = _dt.datetime.now(_dt.timezone.utc).date()
            if today != self._today:
                self._today, self.alerts_today = today, 0
            self.alerts_today += 1

        def write(message: dict) -> None:
            # Stored before it is sent; a store that cannot be written (a full disk) marks the
            # message stored=false, holds it and says so loudly, and the alert still goes out.
            if self.event_log is not None:
                self.event_log.record(message)

        self.publisher.publish(f"alert.{camera}", event, camera=camera, before_send=write)

    # ------------------------------------------------------------------ housekeeping thread
    def _housekeeping_loop(self) -> None:
        interval = self.config.monitor.status_interval
        next_status = time.monotonic()
        while not self._stop.is_set():
            try:
                self._camera_events()
                if time.monotonic() >= next_status:
                    self.publish_status()
                    next_status += interval
            except Exception:
                log.exception("status failed")
            self._stop.wait(min(0.25, interval))

    def _camera_events(self) -> None:
        debounce = self.config.monitor.camera_debounce_s
        now = time.time()
        for cam in self.cameras:
            state, reason, since = self.camera_state(cam)
            if state in (RECONNECTING, STALLED, FAULTY) and not cam.down_reported and now - since >= debounce:
                cam.down_reported = True
                log.warning("%s: camera down (%s: %s)", cam.name, state, reason)
                self.publisher.publish(f"camera.{cam.name}", {"event": "down", "state": state, "reason": reason,
                                                               "since": iso(since)}, camera=cam.name)
            elif state == STREAMING and cam.down_reported:
                cam.down_reported = False
                log.info("%s: camera back up", cam.name)
                self.publisher.publish(f"camera.{cam.name}", {"event": "up", "state": state, "reason": "",
                                                               "since": iso(since)}, camera=cam.name)

    def status(self) -> dict:
        now = time.time()
        cameras = []
        sizes = list(self.batch_sizes)
        with self._cond:
            queues = {c.name: (len(c.pending), c.dropped) for c in self.cameras}
        frames_per_snippet = self.geometry.snippet_length * self.config.engine.frame_stride
        for cam in self.cameras:
            state, reason, _ = self.camera_state(cam)
            latencies = list(cam.latencies)
            queue, dropped = queues[cam.name]
            rate = cam.snippets_per_s(now)
            cameras.append({
                "camera": cam.name, "state": state, "input_fps": round(cam.source.input_fps(), 2),
                "snippets_per_s": round(rate, 3),
                # Source frames scored per second (each snippet covers length x stride of them):
                # keeping up means this matches input_fps.
                "processing_fps": round(rate * frames_per_snippet, 2),
                "latency_ms": round(statistics.median(latencies), 1) if latencies else None,
                "queue": queue, "dropped_snippets": dropped,
                "score": None if cam.policy.score is None else round(cam.policy.score, 6), "threshold": cam.policy.on,
                "off_threshold": cam.policy.off, "calibration": self.calibration_status(cam),
                "in_alert": cam.policy.in_alert, "cooldown_s": round(cam.policy.cooldown_left, 1),
                "alerts": cam.policy.count, "source": cam.source.display,
                "reason": redact(reason) if state != STREAMING else "", "faulty_snippets": cam.faulty_snippets,
                "repeated_frames": cam.source.repeated_frames, "refused_frames": cam.source.refused_frames,
            })
        loop_age = self.loop_age_s()
        return {
            "uptime_s": round(now - self.started, 1),
            "model": {**self.model_info, "providers": self.bundle.providers, "window": self.window,
                      "training_data": self.bundle.manifest.training_data or None, "warning": self.model_warning},
            "dropped_messages": self.publisher.dropped, "alerts_today": self.alerts_today, "cameras": cameras,
            "faults": self.faults(),
            "engine": {"batches": self.batches, "shared_batches": self.shared_batches, "snippets": self.snippets_scored,
                       "mean_batch": round(float(np.mean(sizes)), 2) if sizes else None,
                       "max_batch": max(sizes) if sizes else None, "batch_limit": self.max_batch,
                       "workers": self.workers, "threads": self.bundle.threads,
                       "alert_jobs": self.alert_worker.queued, "extensions_not_located": self.alert_worker.skipped,
                       "loop_age_s": None if loop_age is None else round(loop_age, 2)},
        }

    def faults(self) -> list[dict]:
        """What is wrong with the monitor itself, for the status messages and the dashboard."""
        faults = []
        store = self.event_log
        if store is not None and store.fault is not None:
            faults.append({"kind": "event_log", "message": store.fault, "since": iso(store.fault_since),
                           "held": store.held})
        return faults

    def publish_status(self) -> dict:
        return self.publisher.publish("status", self.status(), camera=None)
