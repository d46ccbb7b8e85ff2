"""Per-camera calibration (issue 13 §1, §5): the tail fit, the calibration of the policy's
start statistic, the state store, learning and alerts marked false. The fit is checked on
samples whose tail is known exactly; the rest on seeded scores and on the real engine (the
end-to-end tests in test_calibration_e2e.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from monitor.alerts import calibration as calib
from monitor.alerts.calibration_store import CalibrationStore
from monitor.alerts.policy import AlertPolicy, SnippetInfo
from monitor.alerts.tail import fit_pareto, fit_tail
from monitor.config import AlertSettings


def _pareto(n: int, shape: float, scale: float, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).random(n)
    return scale / shape * ((1.0 - u) ** -shape - 1.0)


def _level(q: float, shape: float, scale: float) -> float:
    return scale / shape * (q ** -shape - 1.0)


# ----------------------------------------------------------------------------- the fit

@pytest.mark.parametrize("shape", [-0.3, 0.1, 0.4])
def test_the_maximum_likelihood_fit_is_scipys(shape):
    stats = pytest.importorskip("scipy.stats")
    y = _pareto(400, shape, 2.0, seed=1)
    fit = fit_pareto(y)
    c, _, scale = stats.genpareto.fit(y, floc=0)
    assert fit.method == "mle"
    assert fit.shape == pytest.approx(c, abs=2e-3) and fit.scale == pytest.approx(scale, rel=2e-3)


@pytest.mark.parametrize("seed", range(5))
def test_a_known_pareto_tail_gives_back_its_level_far_past_the_data(seed):
    shape, scale, q = 0.15, 1.0, 1e-6
    x = 3.0 + _pareto(100_000, shape, scale, seed)   # exceeded with probability q: 3 + 46.3
    true = 3.0 + _level(q, shape, scale)
    tail = fit_tail(x)
    assert tail.level(q) == pytest.approx(true, rel=0.2)
    # Ten times rarer than one in the sample: the empirical quantile stops at the sample's maximum.
    assert np.quantile(x, 1 - q) <= x.max() < true
    assert tail.probability(tail.level(q)) == pytest.approx(q, rel=1e-6)


def test_declustered_peaks_count_an_excursion_once():
    # Each draw of a known tail held for 4 values in a row, as a score stays up for a few
    # snippets: every value exceeds a level with the draw's probability, a cluster starts with
    # a quarter of it.
    from monitor.alerts.tail import fit_clustered_tail
    shape, scale, q = 0.1, 1.0, 1e-5
    draws = _pareto(40_000, shape, scale, seed=0)
    series = np.repeat(draws, 4)
    z = _level(q, shape, scale)
    per_value = fit_tail(series).probability(z)
    per_cluster = fit_clustered_tail([series], run=1).probability(z)
    assert per_value == pytest.approx(q, rel=0.35)
    assert per_cluster == pytest.approx(q / 4, rel=0.35)
    assert 0.7 < 4 * per_cluster / per_value < 1.05   # neighbouring draws above t merge now and then


def test_more_false_alerts_allowed_gives_a_lower_threshold():
    rng = np.random.default_rng(7)
    scores = 1 / (1 + np.exp(-rng.normal(-3.0, 1.0, 3000)))   # a quiet camera's logits
    footage = [calib.Footage(scores, 3000 * 16 / 15)]
    levels = [calib.calibrate(footage, camera="c", bundle_sha="s" * 64, target_per_day=t, min_snippets=1,
                              search=False) for t in (0.1, 1, 10, 100)]
    thresholds = [c.threshold for c in levels]
    assert thresholds == sorted(thresholds, reverse=True) and len(set(thresholds)) == 4, thresholds
    for c in levels:
        assert c.reached and c.estimated_per_day <= c.target_per_day * 1.0001
        assert c.snippets == 3000 and c.snippets_per_day == pytest.approx(81000, rel=1e-6)
    # Past the data: one false alert a day is rarer than anything in 53 minutes of footage.
    assert levels[1].threshold > scores.max()


def test_short_footage_never_takes_the_level_below_the_bundles():
    rng = np.random.default_rng(8)
    scores = 1 / (1 + np.exp(-rng.normal(-4.0, 0.5, 600)))   # 10 min of a very quiet camera
    footage = [calib.Footage(scores, 600 * 16 / 15)]
    free = calib.calibrate(footage, camera="c", bundle_sha="s" * 64, target_per_day=1, min_snippets=1, search=False)
    held = calib.calibrate(footage, camera="c", bundle_sha="s" * 64, target_per_day=1, min_snippets=1, search=False,
                           floor=0.5)
    assert free.threshold < 0.5 and held.threshold == 0.5 and held.reached
    # 10 minutes are a long time at 240 false alerts a day (one every 6 minutes): no floor then.
    busy = calib.calibrate(footage, camera="c", bundle_sha="s" * 64, target_per_day=240, min_snippets=1,
                           search=False, floor=0.5)
    assert busy.threshold < 0.5


def test_footage_that_spikes_for_single_snippets_gets_a_longer_minimum_duration():
    # As the demo model on real footage: normal, but 1.000 for one snippet now and then.
    rng = np.random.default_rng(3)
    scores = 1 / (1 + np.exp(-rng.normal(-3.0, 0.8, 1200)))
    scores[rng.choice(1200, 12, replace=False)] = 1.0
    cal = calib.calibrate([calib.Footage(scores, 1200 * 16 / 15)], camera="c", bundle_sha="s" * 64,
                          target_per_day=1, min_snippets=1)
    assert [o["k"] for o in cal.fit["options"]][0] == 1 and cal.fit["options"][0]["on"] == calib.MAX_ON
    assert cal.min_snippets >= 2 and cal.threshold < calib.MAX_ON and cal.reached
    assert cal.off_threshold <= cal.threshold and cal.alerts_on_footage == 0
    # The policy with these settings, replayed on the footage, stays quiet; with one snippet it would not.
    assert calib._alerts(calib.Footage(scores, 1280), AlertSettings(on=cal.threshold, off=cal.off_threshold,
                                                                    min_snippets=1, cooldown_s=10)) > 0


def test_the_start_statistic_is_what_the_policy_starts_on():
    rng = np.random.default_rng(5)
    raw = rng.random(200)
    stat = calib.start_statistic(raw, smoothing=3, min_snippets=4)   # stat[j] is at snippet j + 3
    for quantile in (0.5, 0.8, 0.95, 0.99, 1.0):
        level = float(np.quantile(stat, quantile))
        policy = AlertPolicy("c", AlertSettings(on=level, off=0.0, min_snippets=4, smoothing=3), {})
        first = next(i for i, r in enumerate(raw)
                     if any(e["event"] == "start" for e in policy.update(SnippetInfo(i, 16 * i, 16 * i + 15, i, i + 1),
                                                                          float(r))[1]))
        assert first == int(np.argmax(stat >= level)) + 3


def test_too_little_footage_is_refused_by_name():
    with pytest.raises(calib.CalibrationError, match="cam7: 12 snippets"):
        calib.calibrate([calib.Footage(np.full(12, 0.1), 12.0)], camera="cam7", bundle_sha="s", target_per_day=1)


# ----------------------------------------------------------------------------- learning

def _info(i: int, frame0: int | None = None, ts0: float = 0.0) -> SnippetInfo:
    f = 16 * i if frame0 is None else frame0
    return SnippetInfo(i, f, f + 15, ts0 + f / 16.0, ts0 + (f + 15) / 16.0)


def test_the_learner_counts_footage_on_the_sources_clock_and_breaks_at_gaps():
    learner = calib.Learner(learn_s=30.0)
    for i in range(20):
        learner.add(_info(i), 0.1)
    assert not learner.done and learner.footage_s == pytest.approx(20.0)
    for i in range(25, 40):   # snippets 20-24 dropped: a new stretch
        learner.add(_info(i), 0.2)
    assert learner.done and learner.snippets == 35 and learner.footage_s == pytest.approx(35.0)
    stretches = learner.footage("x")
    assert [len(f.scores) for f in stretches] == [20, 15] and [f.seconds for f in stretches] == [20.0, 15.0]
    assert [len(f.scores) for f in learner.footage("x", limit_s=26.0)] == [20, 6]


def test_a_policy_that_is_not_armed_never_starts_and_an_end_carries_its_raw_scores():
    settings = AlertSettings(on=0.5, off=0.3, min_snippets=2, cooldown_s=0)
    policy = AlertPolicy("c", settings, {}, bundle_sha="ab" * 32)
    policy.armed = False
    assert all(not policy.update(_info(i), 0.9)[1] for i in range(5))
    policy.armed = True
    events = [e for i, r in enumerate([0.9, 0.8, 0.7, 0.1], 5) for e in policy.update(_info(i), r)[1]]
    assert [e["event"] for e in events] == ["start", "end"]
    assert events[1]["raw_scores"] == [0.9, 0.8, 0.7] and events[1]["bundle_sha"] == "ab" * 8
    policy.retune(AlertSettings(on=0.95, off=0.9, min_snippets=1, cooldown_s=0))
    assert not any(policy.update(_info(i), 0.9)[1] for i in range(10, 14))


# ----------------------------------------------------------------------------- alerts marked false

def test_alerts_marked_false_join_the_footage_and_raise_the_threshold():
    sha = "cd" * 32
    rng = np.random.default_rng(11)
    normal = calib.Footage(1 / (1 + np.exp(-rng.normal(-3.0, 0.7, 900))), 960.0)
    before = calib.calibrate([normal], camera="c", bundle_sha=sha, target_per_day=1, min_snippets=2, search=False)
    false_alarm = {"event": "end", "alert_id": "c-3", "snippets": [40, 47], "duration_s": 8.5, "bundle_sha": sha[:16],
                   "raw_scores": [0.62, 0.71, 0.77, 0.8, 0.74, 0.69, 0.6, 0.55]}
    other_model = dict(false_alarm, alert_id="c-4", bundle_sha="ef" * 8)
    no_scores = {"event": "end", "alert_id": "c-5", "snippets": [1, 2], "duration_s": 2.0, "bundle_sha": sha[:16]}
    extra, skipped = calib.false_alert_footage([false_alarm, other_model, no_scores], sha)
    assert skipped == 2 and len(extra) == 1 and extra[0].seconds == pytest.approx(8.5)
    after = calib.calibrate([normal] + extra, camera="c", bundle_sha=sha, target_per_day=1, min_snippets=2,
                            search=False, false_alerts=len(extra))
    # With its own false alarm counted as normal, the camera no longer alerts on that alarm.
    assert before.threshold < 0.71 < after.threshold and after.false_alerts == 1


# ----------------------------------------------------------------------------- the store

def _calibration(**kw) -> calib.Calibration:
    fields = dict(camera="lobby", bundle_sha="a1" * 32, threshold=0.8, off_threshold=0.7, min_snippets=3,
                  smoothing=1, target_per_day=1.0, estimated_per_day=0.9, reached=True, footage_s=600.0,
                  snippets=562, snippets_per_day=81000.0, alerts_on_footage=0)
    return calib.Calibration(**{**fields, **kw})


def test_the_store_keeps_one_calibration_per_camera_and_bundle(tmp_path):
    store = CalibrationStore(tmp_path / "state")
    path = store.save(_calibration())
    assert path == tmp_path / "state" / "calibration" / "lobby" / f"{'a1' * 8}.json"
    assert store.load("lobby", "a1" * 32) == _calibration()
    assert store.load("lobby", "b2" * 32) is None and store.load("door", "a1" * 32) is None
    store.save(_calibration(bundle_sha="b2" * 32, threshold=0.9))
    assert store.load("lobby", "a1" * 32).threshold == 0.8 and store.load("lobby", "b2" * 32).threshold == 0.9
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("text, reason", [
    ("{not json", "cannot read it"),
    (json.dumps({**_calibration().to_dict(), "threshold": 1.5}), "'threshold' = 1.5"),
    (json.dumps({k: v for k, v in _calibration().to_dict().items() if k != "min_snippets"}), "'min_snippets' is missing"),
    (json.dumps({**_calibration().to_dict(), "bundle_sha": "f" * 64}), "'bundle_sha' names another bundle"),
])
def test_a_damaged_calibration_file_is_named_with_the_reason(tmp_path, text, reason):
    store = CalibrationStore(tmp_path)
    path = store.path("lobby", "a1" * 32)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(calib.CalibrationError) as err:
        store.load("lobby", "a1" * 32)
    assert str(path) in str(err.value) and reason in str(err.value)


def test_calibrated_levels_replace_the_bundles_but_a_configured_off_stays():
    cal = _calibration(threshold=0.83, off_threshold=0.75, min_snippets=4)
    s = calib.settings_for(AlertSettings(cooldown_s=5.0), cal)
    assert (s.on, s.off, s.min_snippets, s.cooldown_s) == (0.83, 0.75, 4, 5.0)
    assert calib.settings_for(AlertSettings(off=0.5), cal).off == 0.5
    assert math.isclose(calib.settings_for(AlertSettings(off=0.9), cal).off, 0.83)   # never above on


# ----------------------------------------------------------------------------- the dashboard

def test_the_dashboard_shows_where_each_cameras_levels_come_from():
    import io

    from rich.console import Console
    from rich.text import Text

    from monitor.dashboard.render import camera_table
    from monitor.dashboard.state import DashboardState

    def entry(name, threshold, calibration):
        return {"camera": name, "state": "streaming", "input_fps": 15.0, "snippets_per_s": 0.94, "latency_ms": 80.0,
                "queue": 0, "dropped_snippets": 0, "score": 0.02, "threshold": threshold, "in_alert": False,
                "alerts": 0, "source": f"synthetic://{name}", "calibration": calibration}

    state = DashboardState(clock=lambda: 100.0)
    assert state.feed("status", {"schema": 1, "monitor": "box", "seq": 0, "camera": None, "ts": "2026-12-01T10:00:00Z",
                                 "type": "status", "uptime_s": 5.0, "model": {"name": "demo", "stage": 4},
                                 "dropped_messages": 0, "alerts_today": 0, "cameras": [
        entry("lobby", 0.1053, {"source": "calibrated", "target_per_day": 1.0, "footage_s": 599.5}),
        entry("yard", 0.501, {"source": "bundle", "target_per_day": None, "footage_s": None}),
        entry("gate", 0.501, {"source": "learning", "target_per_day": 1.0, "footage_s": 252.0, "learn_s": 600.0})]})
    rows = {}
    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(Text("\n").join(camera_table(state.snapshot().cameras, width=160)))
    for line in console.export_text().splitlines():
        if line.split() and line.split()[0] in ("lobby", "yard", "gate"):
            rows[line.split()[0]] = line
    assert "0.105 1/d·10m" in rows["lobby"] and "ok" in rows["lobby"]
    assert "0.501 bundle" in rows["yard"]
    assert "learning 42%" in rows["gate"] and "learn 5m/10m" in rows["gate"]
