"""Bad input refused clearly: each case runs a real run_monitor.py (or python -m export)
subprocess on a real bad file, bundle, source or flag, and expects exit code 2, exactly one
line on stderr that names the file, field, flag or source and the reason, and no traceback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from monitor.config import DEMO_BUNDLE
from tests.live_helpers import ROOT, endpoint

GOOD_TOML = "[monitor]\nstatus_interval = 1.0\n"


def _bundle(tmp, edit=None):
    out = tmp / "bundle"
    shutil.copytree(DEMO_BUNDLE, out)
    if edit:
        edit(out)
    return out


def _manifest(edit):
    def apply(bundle):
        path = bundle / "manifest.json"
        m = json.loads(path.read_text())
        edit(m)
        path.write_text(json.dumps(m))
    return apply


def _flip_byte(name):
    def apply(bundle):
        path = bundle / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01   # one bit of one weight: the graph still loads and runs
        path.write_bytes(bytes(data))
    return apply


def _write(tmp, name, text):
    path = tmp / name
    path.write_text(text)
    return path


def _set(obj, dotted, value):
    *parents, last = dotted.split("/")
    for key in parents:
        obj = obj[key]
    if value is KeyError:
        del obj[last]
    else:
        obj[last] = value


# (id, argv builder(tmp) -> list, substrings the one line must hold)
CASES = [
    ("toml-syntax", lambda t: ["--config", _write(t, "bad.toml", "[model\npath = 1\n")], ["bad.toml", "not valid TOML"]),
    ("unknown-key", lambda t: ["--config", _write(t, "bad.toml", "[engine]\nmax_bath = 2\n")],
     ["bad.toml", "'engine.max_bath'", "not a known setting"]),
    ("wrong-type", lambda t: ["--config", _write(t, "bad.toml", "[monitor]\nstatus_interval = \"2\"\n")],
     ["bad.toml", "'monitor.status_interval'", "seconds"]),
    ("camera-key", lambda t: ["--config", _write(t, "bad.toml", "[[cameras]]\nurl = 'rtsp://h/x'\nmax_frame_pixels = 10\n")],
     ["bad.toml", "'cameras[0].max_frame_pixels'"]),
    ("two-passwords", lambda t: ["--config", _write(t, "bad.toml", "[[cameras]]\nurl = 'rtsp://h/x'\n"
                                                  "password_env = 'A'\npassword_file = 'b'\n")],
     ["bad.toml", "'cameras[0].password_file'", "not both"]),
    ("password-env-unset", lambda t: ["--config", _write(t, "c.toml", "[[cameras]]\nname = 'gate'\nurl = 'rtsp://h/x'\n"
                                                       "username = 'v'\npassword_env = 'SSRL_TEST_UNSET_PW'\n")],
     ["camera 'gate'", "SSRL_TEST_UNSET_PW", "not set"]),
    ("password-file-missing", lambda t: ["--config", _write(t, "c.toml", "[[cameras]]\nname = 'gate'\nurl = 'rtsp://h/x'\n"
                                                          f"password_file = '{t / 'nope.pw'}'\n")],
     ["camera 'gate'", "nope.pw", "cannot read"]),
    ("placeholder-unset", lambda t: ["--source", "gate=rtsp://v:${SSRL_TEST_UNSET_PW}@h/x"],
     ["camera 'gate'", "SSRL_TEST_UNSET_PW", "not set"]),
    ("no-bundle-dir", lambda t: ["--model", str(t / "nowhere")], ["nowhere", "no such bundle directory"]),
    ("no-manifest", lambda t: ["--model", str(_bundle(t, lambda b: (b / "manifest.json").unlink()))],
     ["manifest.json", "missing"]),
    ("manifest-json", lambda t: ["--model", str(_bundle(t, lambda b: (b / "manifest.json").write_text("{\"stage\": 4,")))],
     ["manifest.json", "not valid JSON"]),
    ("manifest-field-missing", lambda t: ["--model", str(_bundle(t, _manifest(lambda m: _set(m, "crops", KeyError))))],
     ["manifest.json", "'crops'", "missing"]),
    ("graph-disagrees", lambda t: ["--model", str(_bundle(t, _manifest(lambda m: _set(m, "feature_size", 128))))],
     ["manifest.json", "'feature_size'"]),
    ("graph-file-missing", lambda t: ["--model", str(_bundle(t, lambda b: (b / "temporal.onnx").unlink()))],
     ["'graphs.temporal.file'", "temporal.onnx"]),
    ("graph-byte-flipped", lambda t: ["--model", str(_bundle(t, _flip_byte("spatial.onnx")))],
     ["spatial.onnx", "spatial graph's SHA-256", "changed after export"]),
    ("manifest-hash-edited", lambda t: ["--model", str(_bundle(t, _manifest(
        lambda m: _set(m, "source/sha256/backbone.onnx", "0" * 64))))],
     ["backbone.onnx", "backbone graph's SHA-256"]),
    ("graph-hash-missing", lambda t: ["--model", str(_bundle(t, _manifest(
        lambda m: _set(m, "source/sha256/temporal.onnx", KeyError))))],
     ["manifest.json", "'source.sha256'", "temporal graph"]),
    ("missing-file", lambda t: ["--source", str(t / "gone.mp4")], ["gone.mp4", "no such video file"]),
    ("all-missing", lambda t: ["--source", str(t / "a.mp4"), "--source", str(t / "b.mp4")],
     ["no camera has a source", "a.mp4", "b.mp4"]),
    ("directory-source", lambda t: ["--source", str(t)], ["is a directory, not a video file"]),
    ("scheme", lambda t: ["--source", "ftp://user:hunter2@cam/x"], ["ftp://***@cam/x", "unsupported scheme 'ftp://'"]),
    ("camera-index", lambda t: ["--source", "-1"], ["camera index -1"]),
    ("camera-device", lambda t: ["--source", "97"], ["/dev/video97", "no such camera device"]),
    ("flag-type", lambda t: ["--threads", "many"], ["--threads", "invalid int value"]),
    ("flag-range", lambda t: ["--threshold", "1.5"], ["--threshold", "[0, 1]"]),
]


@pytest.mark.parametrize("argv, names", [pytest.param(argv, names, id=name) for name, argv, names in CASES])
def test_bad_input_is_one_line_naming_it_with_exit_code_2(tmp_path, argv, names):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSRL_TEST_UNSET")}
    args = [str(a) for a in argv(tmp_path)]
    proc = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), *args, "--no-dashboard", "--duration", "5",
                           "--publish", endpoint(), "--events", str(tmp_path / "events.db")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and all(n in lines[0] for n in names), lines[0]
    assert "hunter2" not in proc.stderr


def test_debug_shows_the_traceback_of_an_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "--debug", "--model", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such bundle directory" in proc.stderr and "Traceback" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("flag, content, names", [
    ("--checkpoint", b"not a pickle at all", ["bad.pkl"]),
    ("--backbone", b"\x80\x04garbage", ["bad.pth"]),
])
def test_export_refuses_a_bad_checkpoint_or_weight_file_in_one_line(tmp_path, flag, content, names):
    bad = tmp_path / ("bad.pkl" if flag == "--checkpoint" else "bad.pth")
    bad.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "export", flag, str(bad), "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(n in lines[0] for n in names), lines[0]


def test_the_shipped_demo_bundle_matches_its_hashes():
    from monitor.model.bundle import Bundle
    assert Bundle(DEMO_BUNDLE).manifest.source["sha256"]  # loads: every graph matched its recorded SHA-256


# Every command but run (above): its bad input, and the words its one error line must hold.
DEBUG_CASES = [
    ("events", lambda t: ["events", "--db", t / "missing.db"], ["missing.db", "no event store"]),
    ("mark", lambda t: ["mark", "door-1", "false", "--db", t / "missing.db"], ["missing.db", "no event store"]),
    ("replay", lambda t: ["replay", "--since", "yesterday-ish", "--db", t / "e.db"], ["--since", "not a time"]),
    ("score-features", lambda t: ["score-features", "--model", t / "none", "--features", t / "f.npy", "--out",
                                  t / "s.npy"], ["none", "no such bundle directory"]),
    ("subscribe", lambda t: ["subscribe", "tcp://127.0.0.1:0"], ["endpoint", "port 0"]),
    ("broker", lambda t: ["broker", "--frontend", "tcp://127.0.0.1:99999"], ["--frontend", "out of range"]),
    ("dashboard", lambda t: ["dashboard", "--refresh", "0"], ["--refresh", "must be > 0"]),
    ("keys", lambda t: ["keys", "--out", "/dev/null"], ["--out /dev/null", "not a directory"]),
    ("calibrate", lambda t: ["calibrate", "--source", "cam=x.avi", "--config", t / "none.toml"],
     ["none.toml", "cannot read it"]),
    ("bench", lambda t: ["bench", "--cameras", "0"], ["--cameras 0", "at least 1"]),
]


@pytest.mark.parametrize("argv, words", [pytest.param(argv, words, id=name) for name, argv, words in DEBUG_CASES])
def test_every_command_errs_in_one_line_and_with_debug_shows_the_traceback(tmp_path, argv, words):
    args = [str(a) for a in argv(tmp_path)]
    for debug in ([], ["--debug"]):
        proc = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), *args, *debug], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (debug, proc.returncode, proc.stderr)
        assert lines and lines[-1].startswith("error: ") and all(w in lines[-1] for w in words), (debug, proc.stderr)
        if debug:
            assert "Traceback (most recent call last)" in proc.stderr and len(lines) > 1, proc.stderr
        else:
            assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
