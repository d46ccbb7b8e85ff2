"""Broken inputs fed to a real run_monitor.py subprocess, caused for real: H.264 files cut in
half (with the index at the front, and without it) and with bytes flipped in the middle, a
file that appears only after the start, and a graph edited to give NaN for one camera's
video. The process survives all of them, the healthy cameras are scored and alert, and
nothing stale or non-finite is scored or alerted on."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.factories import BRIGHT, DARK, cached_bundle, write_video
from tests.graph_faults import nan_above_brightness
from tests.live_helpers import ROOT, Subscriber, endpoint, monitor, write_config

pytestmark = pytest.mark.slow
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (the command) not installed")

FRAMES = 200


def h264(path, faststart: bool):
    """A 200-frame H.264 MP4 of FFmpeg's test pattern; faststart puts the index (moov) first."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=128x96:rate=25",
                    "-frames:v", str(FRAMES), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "25",
                    *(["-movflags", "+faststart"] if faststart else []), str(path)], check=True)
    return path


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def flip_middle(path):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 2000, 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _camera(name, url, extra=""):
    return f'[[cameras]]\nname = "{name}"\nurl = "{url}"\nbackoff_initial_s = 0.2\nbackoff_max_s = 1.0\n{extra}\n'


@needs_ffmpeg
def test_truncated_damaged_unreadable_and_late_files_each_handled_while_the_others_run(tmp_path):
    cut = cut_in_half(h264(tmp_path / "cut.mp4", faststart=True))        # decodable up to the cut
    flipped = flip_middle(h264(tmp_path / "flipped.mp4", faststart=False))
    headless = cut_in_half(h264(tmp_path / "headless.mp4", faststart=False))  # its index was in the lost half
    late = tmp_path / "late.avi"                                          # not there at the start
    door = write_video(tmp_path / "door.avi", [(64, DARK), (64, BRIGHT), (64, DARK)])  # healthy: one alert
    ep = endpoint()
    config = write_config(tmp_path / "files.toml", f"""
[monitor]
id = "file-faults"
status_interval = 0.3
camera_debounce_s = 0.3
[model]
path = "{cached_bundle()}"
[publish]
endpoint = "{ep}"
[log]
events = "{tmp_path / 'events.db'}"
""" + _camera("cut", cut) + _camera("flipped", flipped) + _camera("headless", headless) + _camera("late", late)
                          + _camera("door", door))
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--config", str(config), "--no-dashboard")
    try:
        def down(name):
            return [m for m in sub.of(f"camera.{name}") if m["event"] == "down"]
        sub.wait_for(lambda ms: down("late") and down("headless"), "the missing and the unreadable file down",
                     process=proc)
        def ended(ms):
            last = sub.of("status")[-1:] or [{"cameras": []}]
            return {c["camera"]: c for c in last[0]["cameras"] if c["state"] == "ended"}
        sub.wait_for(lambda ms: {"cut", "flipped", "door"} <= set(ended(ms)), "the cut, flipped and healthy files ended",
                     process=proc)
        write_video(tmp_path / "late.tmp.avi", [(48, DARK)]).rename(late)  # the recording lands
        sub.wait_for(lambda ms: len(sub.of("score.late")) >= 3, "the late file scored", process=proc)
        states = {c["camera"]: c for c in sub.of("status")[-1]["cameras"]}
        assert proc.proc.poll() is None  # the unreadable file is still retried: nothing has stopped
        assert proc.terminate() == 0, proc.stderr()
    finally:
        proc.kill()
        sub.close()
    err = proc.stderr()
    assert "Traceback" not in err
    # Cut in half: what was there is scored, then it ends, saying why.
    assert sub.of("score.cut") and max(m["frames"][1] for m in sub.of("score.cut")) < FRAMES // 2 + 16
    assert "truncated or damaged" in states["cut"]["reason"], states["cut"]
    # Bytes flipped in the middle: the damage is skipped and the file is read on past it.
    assert "flipped: damaged data" in err, err[-3000:]
    assert max(m["frames"][1] for m in sub.of("score.flipped")) > FRAMES * 3 // 4
    # No index: it never opens; it is reported with a reason and retried, not fatal.
    assert down("headless")[0]["state"] == "reconnecting" and "cannot open" in down("headless")[0]["reason"]
    assert states["headless"]["state"] == "reconnecting"
    # The healthy camera ran and alerted beside them.
    assert [m["event"] for m in sub.of("alert.door")] == ["start", "end"]
    # A missing file is retried with backoff and picked up once it appears.
    assert "no such" in down("late")[0]["reason"]
    assert "late" in err and "retrying with backoff while the other cameras run" in err


def test_a_graph_giving_nan_for_one_camera_marks_it_faulty_and_the_other_still_alerts(tmp_path):
    bundle = nan_above_brightness(cached_bundle(), tmp_path / "nan-bundle", level=0.9)
    white = write_video(tmp_path / "white.avi", [(200, 255)])             # brightness ~0.97: NaN features
    door = write_video(tmp_path / "door.avi", [(64, DARK), (64, BRIGHT), (72, DARK)])  # ~0.8 at most: finite
    ep = endpoint()
    events = tmp_path / "events.db"
    config = write_config(tmp_path / "nan.toml", f"""
[monitor]
id = "nan"
status_interval = 0.3
camera_debounce_s = 0.3
[model]
path = "{bundle}"
[publish]
endpoint = "{ep}"
[log]
events = "{events}"
[alerts]
min_snippets = 1
cooldown_s = 0
[[cameras]]
name = "white"
url = "{white}"
pace = true
[[cameras]]
name = "door"
url = "{door}"
pace = true
""")
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--config", str(config), "--no-dashboard")
    try:
        sub.wait_for(lambda ms: [m for m in sub.of("alert.door") if m["event"] == "end"], "the door's alert to end",
                     process=proc)
        assert proc.wait() == 0, proc.stderr()  # both files end: the monitor stops by itself
        sub.drain()
    finally:
        proc.kill()
        sub.close()
    err = proc.stderr()
    assert "Traceback" not in err
    down = [m for m in sub.of("camera.white") if m["event"] == "down"]
    assert down and down[0]["state"] == "faulty" and "non-finite" in down[0]["reason"], sub.of("camera.white")
    faulty = [c for m in sub.of("status") for c in m["cameras"] if c["camera"] == "white" and c["state"] == "faulty"]
    assert faulty and faulty[-1]["faulty_snippets"] >= 3 and "non-finite" in faulty[-1]["reason"]
    assert not sub.of("score.white") and not sub.of("alert.white")   # nothing of it scored or alerted
    assert not any(c["state"] == "faulty" for m in sub.of("status") for c in m["cameras"] if c["camera"] == "door")
    assert len(sub.of("score.door")) >= 10
    listed = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "events", "--db", str(events), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    stored = [json.loads(line) for line in listed.stdout.splitlines()]
    assert stored and {e["camera"] for e in stored} == {"door"}
