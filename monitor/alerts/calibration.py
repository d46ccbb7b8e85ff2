"""Per-camera calibration: from a camera's own normal footage, the alert policy's on and off
levels and minimum duration for a target number of false alerts per day.

What is calibrated is what starts an alert. The policy (monitor.alerts.policy) smooths the
raw scores (a moving mean over `smoothing` snippets) and starts an alert when
`min_snippets` consecutive smoothed scores reach `on`, that is when the minimum of the last
`min_snippets` smoothed scores does. That statistic, over the normal footage, is the sample;
its upper tail is fitted by peaks over threshold (monitor.alerts.tail) in logit space (the
scores are sigmoid outputs: logit spreads the crowded top of [0, 1] back out), on the
maxima of its excursions (values that stay up for several snippets, or come back within a
cooldown, are one excursion and would be one alert), and `on` is the level at which an
excursion starts with probability q = target per day / snippets the camera scores per day.
The fit errs on the quiet side: its shape is held at 0 or above (a bounded tail fitted from
a few dozen peaks puts its end too close above the largest value seen), the rate at a level
is never taken below what the footage itself shows there, and on short footage (less than
1 / target days) `on` is never set below the bundle's threshold (see `calibrate`).

A model can score normal footage at the very top (the demo model gives real footage 1.000
for a snippet or two): no level below MAX_ON then keeps a one-snippet policy quiet. The
minimum duration is the other handle: starting from the bundle's, longer runs are tried
until one reaches the target below MAX_ON (when none does, the one that would have raised
the fewest alerts on the footage itself, flagged `reached: false`). The off level sits at the camera's own ordinary
high level (its 90th percentile), never below on - 0.1 and never above on, so that an
alert ends when the camera is back to normal, even on a camera whose baseline is high.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from monitor.alerts.policy import AlertPolicy, SnippetInfo
from monitor.alerts.tail import MIN_PEAKS, cluster_maxima, fit_clustered_tail
from monitor.config import AlertSettings

log = logging.getLogger("monitor.alerts.calibration")

SCHEMA = 1
DAY_S = 86400.0
MAX_ON = 0.999            # the highest on level calibration sets: above it, a longer minimum duration
MAX_MIN_SNIPPETS = 6      # the longest minimum duration calibration tries
MIN_SNIPPETS = 20         # snippets of footage needed to calibrate at all
OFF_QUANTILE = 0.9        # the camera's ordinary high level, for the off threshold
HYSTERESIS = 0.1          # off is at most this far below on (as the bundle default)
_CLIP = 1e-7              # scores are float32 sigmoid outputs: 1.0 exactly is common
# Where a camera's thresholds come from (status messages, dashboard).
BUNDLE, CONFIG, CALIBRATED, LEARNING = "bundle", "config", "calibrated", "learning"


class CalibrationError(ValueError):
    """Footage that cannot be calibrated on, or a stored calibration that cannot be read."""


@dataclass
class Footage:
    """Raw scores of one unbroken stretch of a camera's normal footage, in order."""
    scores: np.ndarray
    seconds: float
    label: str = ""

    def __post_init__(self):
        self.scores = np.asarray(self.scores, np.float64).ravel()


@dataclass
class Calibration:
    """A camera's calibrated policy for one bundle, as stored in the state directory."""
    camera: str
    bundle_sha: str
    threshold: float               # on
    off_threshold: float
    min_snippets: int
    smoothing: int                 # the policy's smoothing it was calibrated for
    target_per_day: float
    estimated_per_day: float       # the fit's false-alert rate at these settings (upper bound)
    reached: bool                  # False: no setting within MAX_ON / MAX_MIN_SNIPPETS meets the target
    footage_s: float               # footage learnt from (seconds of video)
    snippets: int
    snippets_per_day: float
    alerts_on_footage: int         # alerts these settings raise on the footage itself
    false_alerts: int = 0          # alerts marked false whose snippets joined the footage
    fit: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)
    created: str = ""
    schema: int = SCHEMA

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "calibration") -> "Calibration":
        if not isinstance(data, dict):
            raise CalibrationError(f"{source}: not a JSON object")
        if data.get("schema") != SCHEMA:
            raise CalibrationError(f"{source}: field 'schema' is {data.get('schema')!r}, this monitor reads {SCHEMA}")
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(n for n in ("camera", "bundle_sha", "threshold", "off_threshold", "min_snippets",
                                     "smoothing", "target_per_day", "footage_s") if n not in data)
        if missing:
            raise CalibrationError(f"{source}: field '{missing[0]}' is missing")
        cal = cls(**{k: v for k, v in data.items() if k in names})
        if not (0.0 <= cal.off_threshold <= cal.threshold <= 1.0):
            raise CalibrationError(f"{source}: fields 'threshold' = {cal.threshold!r} and 'off_threshold' = "
                                   f"{cal.off_threshold!r} must satisfy 0 <= off <= on <= 1")
        if not (isinstance(cal.min_snippets, int) and cal.min_snippets >= 1):
            raise CalibrationError(f"{source}: field 'min_snippets' = {cal.min_snippets!r}: must be an integer >= 1")
        return cal

    def summary(self) -> str:
        reach = "" if self.reached else " (target not reached: more footage or a longer minimum duration needed)"
        return (f"on {self.threshold:.4f}, off {self.off_threshold:.4f}, {self.min_snippets} snippet(s) long, for "
                f"{self.target_per_day:g} false alert(s)/day (estimated {self.estimated_per_day:.3g}/day){reach}; "
                f"learnt from {self.footage_s:.0f} s of footage ({self.snippets} snippets"
                f"{f', {self.false_alerts} alert(s) marked false' if self.false_alerts else ''})")


def settings_for(base: AlertSettings, cal: Calibration) -> AlertSettings:
    """A camera's configured settings with its calibrated levels and minimum duration (an
    `off` the configuration sets stays)."""
    off = cal.off_threshold if base.off is None else base.off
    return replace(base, on=cal.threshold, off=off, min_snippets=cal.min_snippets).resolved(cal.threshold,
                                                                                          cal.min_snippets)


# ----------------------------------------------------------------------------- the statistic

def smoothed(scores: np.ndarray, smoothing: int) -> np.ndarray:
    """The policy's moving mean: at each snippet the mean of the last `smoothing` raw scores
    (fewer at the start, as its deque holds)."""
    x = np.asarray(scores, np.float64)
    if smoothing <= 1 or len(x) == 0:
        return x.copy()
    # Means of the same numbers in the same order as the policy takes them, to the last bit.
    head = [float(np.mean(x[:i])) for i in range(1, min(smoothing, len(x) + 1))]
    full = np.lib.stride_tricks.sliding_window_view(x, smoothing).mean(axis=1) if len(x) >= smoothing else []
    return np.concatenate([head, full])


def start_statistic(scores: np.ndarray, smoothing: int, min_snippets: int) -> np.ndarray:
    """At each snippet from the min_snippets-th on: the minimum of the last `min_snippets`
    smoothed scores. The policy starts an alert exactly when this reaches `on`."""
    s = smoothed(scores, smoothing)
    k = int(min_snippets)
    if len(s) < k:
        return np.empty(0)
    if k == 1:
        return s
    windows = np.lib.stride_tricks.sliding_window_view(s, k)
    return windows.min(axis=1)


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), _CLIP, 1.0 - _CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


# ----------------------------------------------------------------------------- calibration

def calibrate(footage: list[Footage], *, camera: str, bundle_sha: str, target_per_day: float,
              smoothing: int = 1, min_snippets: int = 1, search: bool = True, cooldown_s: float = 10.0,
              false_alerts: int = 0, sources: list | None = None, floor: float | None = None) -> Calibration:
    """Fit the policy for `target_per_day` false alerts per day on `footage`.

    `floor` (the bundle's threshold): the on level is not set below it unless the footage is
    long enough to have shown one false alert at the target rate (footage days × target >= 1).
    Shorter footage can say that a camera is noisier than the bundle assumes, and how much (the
    tail fit extrapolates upwards), but not that it is quieter: the rare excursions that make
    false alerts are exactly what a short stretch of footage may happen not to hold.

    `min_snippets` is where the search starts (the bundle's); with `search` False it is kept
    (the configuration fixes it). `cooldown_s` only enters the replay that counts the alerts
    the result raises on the footage itself."""
    if not target_per_day > 0:
        raise CalibrationError(f"target per day must be > 0, got {target_per_day}")
    footage = [f for f in footage if len(f.scores)]
    snippets = sum(len(f.scores) for f in footage)
    seconds = sum(f.seconds for f in footage)
    if snippets < MIN_SNIPPETS or seconds <= 0:
        raise CalibrationError(f"{camera}: {snippets} snippets ({seconds:.0f} s) of footage; calibration needs at "
                               f"least {MIN_SNIPPETS} snippets")
    per_day = snippets / seconds * DAY_S
    q = target_per_day / per_day
    ks = range(min_snippets, max(min_snippets, MAX_MIN_SNIPPETS) + 1) if search else [min_snippets]
    options = []
    run = max(1, math.ceil(cooldown_s / (seconds / snippets)))   # snippets within one excursion
    for k in ks:
        stats = [start_statistic(f.scores, smoothing, k) for f in footage]
        if sum(len(x) for x in stats) < MIN_PEAKS + 1:
            continue
        option = _level(stats, q, per_day, k, run, floor if seconds / DAY_S * target_per_day < 1 else None)
        options.append(option)
        if option["reached"]:
            break
    if not options:
        raise CalibrationError(f"{camera}: too little unbroken footage for a minimum duration of {min_snippets} "
                               f"snippets")
    ordinary = float(np.quantile(np.concatenate([smoothed(f.scores, smoothing) for f in footage]), OFF_QUANTILE))

    def settings_of(option: dict) -> AlertSettings:
        on = option["on"]
        off = round(min(on, max(on - HYSTERESIS, ordinary)), 4)
        return AlertSettings(on=on, off=off, min_snippets=option["k"], cooldown_s=cooldown_s, smoothing=smoothing)

    for option in options:   # what each would have done on the footage itself
        option["alerts_on_footage"] = sum(_alerts(f, settings_of(option)) for f in footage)
    # None reaches the target: the one that stays quietest on the footage, then the lowest
    # estimated rate, then the shortest (it alerts soonest).
    best = options[-1] if options[-1]["reached"] else \
        min(options, key=lambda o: (o["alerts_on_footage"], o["estimated_per_day"], o["k"]))
    settings = settings_of(best)
    on, off, k, replayed = settings.on, settings.off, best["k"], best["alerts_on_footage"]
    cal = Calibration(
        camera=camera, bundle_sha=bundle_sha, threshold=on, off_threshold=off, min_snippets=k, smoothing=smoothing,
        target_per_day=float(target_per_day), estimated_per_day=round(best["estimated_per_day"], 6),
        reached=bool(best["reached"]), footage_s=round(seconds, 2), snippets=snippets,
        snippets_per_day=round(per_day, 1), alerts_on_footage=replayed, false_alerts=false_alerts,
        fit={"method": "peaks-over-threshold, generalised Pareto (logit of the start statistic)",
             "options": [{k_: v for k_, v in o.items() if k_ != "reached"} for o in options]},
        sources=list(sources or []),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"))
    (log.info if cal.reached else log.warning)("%s: calibrated %s", camera, cal.summary())
    return cal


def calibrate_camera(footage: list[Footage], marked_false: list[dict], *, camera: str, bundle_sha: str,
                     settings: AlertSettings, manifest, target_per_day: float | None = None,
                     sources: list | None = None) -> Calibration:
    """`calibrate` for a camera as configured (`settings`: its alert settings, not resolved)
    and its bundle (`manifest`): the smoothing and cooldown it runs with, a minimum duration
    the configuration fixes or else a search from the bundle's, the bundle's threshold as the
    floor, and the alerts marked false (their `end` messages) as more footage."""
    extra, skipped = false_alert_footage(marked_false, bundle_sha)
    if skipped:
        log.info("%s: %d alert(s) marked false left out (scored by another bundle, or without their scores)",
                 camera, skipped)
    return calibrate(footage + extra, camera=camera, bundle_sha=bundle_sha,
                     target_per_day=settings.target_per_day if target_per_day is None else target_per_day,
                     smoothing=settings.smoothing, min_snippets=settings.min_snippets or manifest.min_snippets,
                     search=settings.min_snippets is None, cooldown_s=settings.cooldown_s, false_alerts=len(extra),
                     sources=sources, floor=manifest.threshold)


def _level(stats: list, q: float, per_day: float, k: int, run: int, floor: float | None = None) -> dict:
    """The on level for exceedance probability q of one start statistic, capped at MAX_ON."""
    stat = np.concatenate(stats)
    z = _logit(stat)
    out = {"k": k, "values": int(len(stat)), "max": round(float(stat.max()), 6)}

    def starts(level: float) -> int:   # excursions of the footage's statistic to `level`
        return sum(len(cluster_maxima(x, level - 1e-12, run)) for x in stats)

    try:
        tail = fit_clustered_tail([_logit(x) for x in stats], run, min_shape=0.0)
    except ValueError as exc:   # no spread in the tail (e.g. all at 1.0): only the empirical rate,
        # and no fewer than one exceedance in the sample, since none seen in n says little.
        rate = max(1, starts(MAX_ON)) / len(z) * per_day
        return {**out, "on": MAX_ON, "estimated_per_day": rate, "reached": rate <= q * per_day, "note": str(exc)}
    level = tail.level(q)
    # Rounded up to 4 decimals, so that rounding never takes it below the level.
    on = math.ceil(_sigmoid(level) * 1e4) / 1e4 if math.isfinite(level) else MAX_ON
    on = min(max(on, floor or 0.0), MAX_ON)
    # Never less than the footage itself shows at that level.
    rate = max(tail.probability(float(_logit(on))), starts(on) / len(stat)) * per_day
    out.update({"on": float(on), "estimated_per_day": rate, "reached": rate <= q * per_day * (1 + 1e-6),
                "shape": round(tail.fit.shape, 4), "scale": round(tail.fit.scale, 4),
                "initial_threshold": round(_sigmoid(tail.t), 6), "peaks": tail.peaks, "fit": tail.fit.method})
    return out


def _alerts(footage: Footage, settings: AlertSettings) -> int:
    """Alerts the policy with `settings` raises on the footage (snippets evenly spaced in time)."""
    policy = AlertPolicy("calibration", settings, {})
    dt = footage.seconds / len(footage.scores)
    starts = 0
    for i, s in enumerate(footage.scores):
        info = SnippetInfo(i, i, i, i * dt, (i + 1) * dt)
        starts += sum(1 for e in policy.update(info, float(s))[1] if e["event"] == "start")
    return starts


# ----------------------------------------------------------------------------- alerts marked false

def marked_false(store, camera: str) -> list[dict]:
    """The `end` messages of a camera's alerts that an operator marked false (`run_monitor.py
    mark ALERT_ID false`), from the event store (monitor.messages.event_store.EventStore)."""
    return [e.message for e in store.events(camera=camera) if e.verdict is False and e.event == "end"]


def false_alert_footage(alerts, bundle_sha: str) -> tuple[list[Footage], int]:
    """The snippets of alerts an operator marked false, as normal footage: each `end` message
    carries its snippets' raw scores (`raw_scores`) and the bundle that scored them
    (`bundle_sha`, its first 16 hex digits); alerts of another bundle, or without scores,
    are left out (counted)."""
    out, skipped = [], 0
    for alert in alerts:
        raw = alert.get("raw_scores") if isinstance(alert, dict) else None
        sha = alert.get("bundle_sha") if isinstance(alert, dict) else None
        if not raw or not isinstance(sha, str) or not sha or not bundle_sha.startswith(sha):
            skipped += 1
            continue
        span = alert.get("snippets") or [0, len(raw) - 1]
        n = max(1, int(span[1]) - int(span[0]) + 1)
        seconds = float(alert.get("duration_s") or 0.0) * min(len(raw), n) / n
        if seconds <= 0:
            skipped += 1
            continue
        out.append(Footage(np.asarray(raw, np.float64), seconds, f"alert {alert.get('alert_id', '?')} marked false"))
    return out, skipped


# ----------------------------------------------------------------------------- learning

class Learner:
    """What a camera scored while it learns: unbroken stretches of raw scores and the seconds
    of footage they cover (on the source's clock: the video's for files)."""

    def __init__(self, learn_s: float | None, stride: int = 1):
        self.learn_s = learn_s          # None: until told (the calibrate command)
        self.stride = stride
        self._stretches: list[tuple[list[float], float, float]] = []   # (scores, first_ts, last_ts)
        self._last: SnippetInfo | None = None
        self._period = 0.0              # seconds per frame, from the snippets' own times

    def add(self, info: SnippetInfo, raw: float) -> None:
        frames = info.last_frame - info.first_frame
        if frames > 0 and info.last_ts > info.first_ts:
            self._period = (info.last_ts - info.first_ts) / frames
        prev = self._last
        broken = prev is None or info.index != prev.index + 1 or info.first_frame != prev.last_frame + self.stride
        if broken:   # a reconnect, a loop, dropped snippets: a new stretch
            self._stretches.append(([], info.first_ts, info.last_ts))
        scores, first, _ = self._stretches[-1]
        scores.append(float(raw))
        self._stretches[-1] = (scores, first, info.last_ts)
        self._last = info

    @property
    def snippets(self) -> int:
        return sum(len(s) for s, _, _ in self._stretches)

    @property
    def footage_s(self) -> float:
        return sum(last - first + self._period for _, first, last in self._stretches)

    @property
    def done(self) -> bool:
        return self.learn_s is not None and self.footage_s >= self.learn_s and self.snippets >= MIN_SNIPPETS

    def footage(self, label: str = "", limit_s: float | None = None) -> list[Footage]:
        """The stretches learnt, the first `limit_s` seconds of them when given (a reader runs
        ahead of the limit by a few snippets)."""
        out, total = [], 0.0
        for scores, first, last in self._stretches:
            if not scores:
                continue
            seconds = last - first + self._period
            if limit_s is not None and total + seconds > limit_s:
                per = seconds / len(scores)
                keep = int((limit_s - total) / per + 1e-6)
                scores, seconds = scores[:keep], keep * per
            if scores:
                out.append(Footage(np.array(scores), seconds, label))
                total += seconds
            if limit_s is not None and total >= limit_s - 1e-9:
                break
        return out
