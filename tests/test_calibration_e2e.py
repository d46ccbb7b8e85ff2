"""Calibration end to end (issue 13 §1, §5, §6): `run_monitor.py calibrate` on real footage
through the real engine, the state file it writes, `run_monitor.py` subprocesses that reload
it (and ignore it for another bundle), a camera that learns live, and an alert marked false
in the real event store that the next calibration takes as normal footage. Real files, real
ZeroMQ sockets, real SQLite. Nothing here asserts on speed."""
from __future__ import annotations

import json
import shutil

import pytest

from monitor.config import DEMO_BUNDLE
from monitor.messages.event_log import read_events
from monitor.model.fingerprint import bundle_sha
from tests.factories import BRIGHT, DARK, cached_bundle, write_video
from tests.i3d_helpers import sample_video
from tests.live_helpers import Subscriber, endpoint, monitor, video_from, write_config

COMMON = ("--no-dashboard", "--status-interval", "0.5")
HALF_FRAME = 398   # vtest.avi: 795 frames at 10 fps; the second half starts here


def _second_half(video, out):
    return video_from(video, out, HALF_FRAME)


def _statuses(sub):
    return [m["cameras"][0] for t, m, _ in sub.messages if t == "status" and m.get("cameras")]


def _run(tmp_path, name, *args, sub=None):
    """A monitor run to the end of its file; its status messages and its stored alert starts."""
    events = tmp_path / f"{name}.db"
    proc = monitor(tmp_path, *args, "--events", str(events), *COMMON, name=name)
    try:
        if sub is not None:
            sub.wait_for(lambda ms: _statuses(sub), "a status message", process=proc)
        assert proc.wait(600) == 0, proc.stderr()
        if sub is not None:
            sub.drain()
    finally:
        proc.kill()
    return [e for e in read_events(events) if e["event"] == "start"]


@pytest.mark.slow
def test_calibrated_on_the_first_half_of_vtest_the_demo_bundle_stays_quiet_on_the_second(tmp_path):
    vtest = sample_video("vtest.avi", tmp_path)
    half2 = _second_half(vtest, tmp_path / "half2.avi")
    state = tmp_path / "state"
    cal = monitor(tmp_path, "calibrate", "--source", f"street={vtest}", "--duration", "39.75", "--target-per-day", "1",
                  "--state", str(state), "--events", str(tmp_path / "none.db"), name="calibrate")
    assert cal.wait(600) == 0, cal.stderr()
    sha = bundle_sha(DEMO_BUNDLE)
    files = list((state / "calibration" / "street").glob("*.json"))
    assert [f.name for f in files] == [f"{sha[:16]}.json"], files
    stored = json.loads(files[0].read_text())
    assert stored["camera"] == "street" and stored["bundle_sha"] == sha and stored["target_per_day"] == 1.0
    # The first half, whole snippets of 16 frames at 10 fps: 24 of them, 38.4 s.
    assert stored["snippets"] == 24 and stored["footage_s"] == pytest.approx(38.4)
    assert 0 < stored["off_threshold"] <= stored["threshold"] <= 0.999 and stored["min_snippets"] >= 1
    assert f"street: on {stored['threshold']:.4f}" in cal.stdout() and str(files[0]) in cal.stdout()

    # A monitor started on the second half reloads it, says so, and stays quiet.
    ep = endpoint()
    sub = Subscriber(ep, topics=("status",))
    try:
        starts = _run(tmp_path, "calibrated", "--source", f"street={half2}", "--state", str(state),
                      "--publish", ep, sub=sub)
        cam = _statuses(sub)[-1]
    finally:
        sub.close()
    assert cam["calibration"]["source"] == "calibrated" and cam["threshold"] == stored["threshold"]
    assert cam["off_threshold"] == stored["off_threshold"] and cam["calibration"]["min_snippets"] == stored["min_snippets"]
    assert cam["calibration"]["target_per_day"] == 1.0 and cam["calibration"]["footage_s"] == pytest.approx(38.4)
    assert len(starts) <= 1, starts          # the bar; in fact none
    assert starts == []
    # Without the calibration, the bundle's own levels alert on the same footage (as before).
    assert _run(tmp_path, "bundle", "--source", f"street={half2}", "--state", str(tmp_path / "empty"))

    # Another bundle (the same graphs, another manifest: another SHA) never reuses it.
    other = tmp_path / "other_bundle"
    shutil.copytree(DEMO_BUNDLE, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["created"] = "2027-01-01T00:00:00+00:00"
    (other / "manifest.json").write_text(json.dumps(manifest, indent=2))
    ep = endpoint()
    sub = Subscriber(ep, topics=("status",))
    proc = monitor(tmp_path, "--model", str(other), "--source", f"street={half2}", "--state", str(state),
                   "--publish", ep, "--events", str(tmp_path / "other.db"), *COMMON, name="other")
    try:
        sub.wait_for(lambda ms: _statuses(sub), "a status message", process=proc)
        assert proc.terminate() == 0, proc.stderr()
    finally:
        proc.kill()
        sub.close()
    cam = _statuses(sub)[-1]
    assert cam["calibration"]["source"] == "bundle" and cam["threshold"] == manifest["threshold"]


@pytest.mark.slow
def test_a_camera_learns_before_it_alerts_then_calibrates_itself_and_stores_it(tmp_path):
    # 25 fps, 16-frame snippets of 0.64 s. Learning takes the first 20 s (32 snippets), bright
    # stretch included: the bundle's threshold would alert on it, a learning camera does not.
    # After learning, a long bright stretch (10 snippets) raises the one alert. The file is
    # paced: read as fast as it decodes, learning could end before the subscriber's first
    # status message arrives (it did once under the full suite's load).
    bundle = cached_bundle()
    video = write_video(tmp_path / "hall.avi", [(64, DARK), (64, BRIGHT), (16 * 30, DARK), (160, BRIGHT), (64, DARK)])
    state = tmp_path / "state"
    ep = endpoint()
    config = write_config(tmp_path / "learn.toml", f"""
[monitor]
state_dir = "{state}"
[model]
path = "{bundle}"
[publish]
endpoint = "{ep}"
[[cameras]]
name = "hall"
url = "{video}"
pace = true
learn_s = 20
""")
    sub = Subscriber(ep, topics=("status",))
    try:
        starts = _run(tmp_path, "learn", "--config", str(config), sub=sub)
        statuses = _statuses(sub)
    finally:
        sub.close()
    sources = [c["calibration"]["source"] for c in statuses]
    assert "learning" in sources and sources[-1] == "calibrated", sources
    assert sources.index("calibrated") > sources.index("learning")
    learning = next(c for c in statuses if c["calibration"]["source"] == "learning")
    assert learning["calibration"]["learn_s"] == 20 and learning["calibration"]["target_per_day"] == 1.0
    stored = json.loads((state / "calibration" / "hall" / f"{bundle_sha(bundle)[:16]}.json").read_text())
    assert stored["footage_s"] >= 20 and stored["snippets"] >= 31
    assert statuses[-1]["threshold"] == stored["threshold"]
    assert statuses[-1]["calibration"]["footage_s"] == pytest.approx(stored["footage_s"], abs=0.05)
    # One alert, after learning, on the second bright stretch (frames 608-767).
    assert len(starts) == 1 and starts[0]["frames"][0] >= 608, [s["frames"] for s in starts]


@pytest.mark.slow
def test_an_alert_marked_false_is_normal_footage_for_the_next_calibration(tmp_path):
    bundle = cached_bundle()
    door = write_video(tmp_path / "door.avi", [(64, DARK), (64, BRIGHT), (64, DARK)])
    normal = write_video(tmp_path / "normal.avi", [(16 * 48, DARK)], seed=1)
    starts = _run(tmp_path, "first", "--model", str(bundle), "--source", f"door={door}",
                  "--state", str(tmp_path / "state"))
    assert len(starts) == 1
    alert_id = starts[0]["alert_id"]
    mark = monitor(tmp_path, "mark", alert_id, "false", "--db", str(tmp_path / "first.db"), name="mark")
    assert mark.wait() == 0, mark.stderr()

    def calibrate(state, events):
        proc = monitor(tmp_path, "calibrate", "--model", str(bundle), "--source", f"door={normal}",
                       "--state", str(state), "--events", str(events), name=f"calibrate-{state.name}")
        assert proc.wait(600) == 0, proc.stderr()
        return json.loads(next((state / "calibration" / "door").glob("*.json")).read_text())

    without = calibrate(tmp_path / "plain", tmp_path / "no-such.db")
    with_false = calibrate(tmp_path / "state", tmp_path / "first.db")
    assert without["false_alerts"] == 0 and with_false["false_alerts"] == 1
    # The false alarm was 4 bright snippets: the recalibrated camera needs more than that, or a
    # level above what they scored.
    raw = next(e for e in read_events(tmp_path / "first.db") if e["event"] == "end")["raw_scores"]
    assert len(raw) == 4 and min(raw) > 0.9
    assert with_false["min_snippets"] > 4 or with_false["threshold"] > min(raw)
    assert (with_false["min_snippets"], with_false["threshold"]) != (without["min_snippets"], without["threshold"])
    # And the same footage, scored again with it, raises no alert.
    assert _run(tmp_path, "again", "--model", str(bundle), "--source", f"door={door}",
                "--state", str(tmp_path / "state")) == []


@pytest.mark.slow
def test_calibrate_learns_from_a_folder_of_recordings_in_name_order(tmp_path):
    bundle = cached_bundle()
    folder = tmp_path / "recordings"
    folder.mkdir()
    for i, seed in enumerate((3, 4)):
        write_video(folder / f"gate-{i}.avi", [(16 * 20, DARK)], seed=seed)
    (folder / "notes.txt").write_text("not a video")
    proc = monitor(tmp_path, "calibrate", "--model", str(bundle), "--source", f"gate={folder}", "--state",
                   str(tmp_path / "state"), "--events", str(tmp_path / "none.db"), name="folder")
    assert proc.wait(600) == 0, proc.stderr()
    stored = json.loads(next((tmp_path / "state" / "calibration" / "gate").glob("*.json")).read_text())
    # Two files of 20 snippets of 0.64 s, each its own stretch (the window starts again).
    assert stored["snippets"] == 40 and stored["footage_s"] == pytest.approx(2 * 20 * 0.64)
    assert [s.rsplit("/", 1)[-1] for s in stored["sources"]] == ["gate-0.avi", "gate-1.avi"]


def test_calibrate_refuses_bad_input_in_one_line(tmp_path):
    for args, reason in ((["--source", f"cam={tmp_path / 'missing.mp4'}"], "no such video file or folder"),
                         (["--source", str(tmp_path), "--target-per-day", "0"], "--target-per-day = 0"),
                         (["--source", str(tmp_path)], "no video files in this folder")):
        proc = monitor(tmp_path, "calibrate", *args, "--state", str(tmp_path / "s"), name="bad")
        assert proc.wait() == 2
        err = proc.stderr().strip()
        assert len(err.splitlines()) == 1 and reason in err and "Traceback" not in err, err
    # A damaged calibration file stops the monitor naming it, rather than falling back unseen.
    damaged = tmp_path / "s" / "calibration" / "cam" / f"{bundle_sha(DEMO_BUNDLE)[:16]}.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text("{broken")
    proc = monitor(tmp_path, "--source", "cam=synthetic://", "--state", str(tmp_path / "s"), "--publish", endpoint(),
                   "--events", str(tmp_path / "e.db"), "--no-dashboard", name="damaged")
    assert proc.wait() == 2
    err = proc.stderr().strip().splitlines()[-1]
    assert err.startswith(f"error: {damaged}: cannot read it") and "calibrate the camera again" in err, err
