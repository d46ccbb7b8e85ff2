"""The dashboard in a real terminal: `run_monitor.py dashboard --connect` inside tmux, fed by
a real PUB socket on loopback; the screen is read back with `tmux capture-pane`.

tmux is a test dependency (.ci/run installs it). Every wait polls the screen with a generous
timeout; nothing here asserts on how fast anything happens."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.test_dashboard_feed import FakeMonitor

ROOT = Path(__file__).resolve().parents[1]
EXITED = re.compile(r"\[exited (\d+)\]")


class Tmux:
    """One private tmux server (its own socket) running one command in a window of a fixed size."""

    def __init__(self, width: int = 140, height: int = 36):
        if shutil.which("tmux") is None:
            pytest.fail("tmux is needed for the terminal tests: apt-get install -y tmux")
        self.socket = f"ssrl-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.width, self.height = width, height

    def tmux(self, *args: str, check: bool = True) -> str:
        r = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self, argv: list[str]) -> None:
        # After the command ends, say how, and keep the pane open so the test can read it.
        # (the shell traps SIGINT so that Ctrl-C reaches only the command, not the pane)
        script = f"trap : INT; {shlex.join(argv)}; echo \"[exited $?]\"; sleep 600"
        # COLUMNS/LINES exported with a wrong size, as some shells do: the dashboard must
        # follow the real terminal anyway.
        env_prefix = f"cd {shlex.quote(str(ROOT))} && export COLUMNS=80 LINES=24 PYTHONPATH={shlex.quote(str(ROOT))} && "
        self.tmux("new-session", "-d", "-s", "main", "-x", str(self.width), "-y", str(self.height),
                  "sh", "-c", env_prefix + script)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "main")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "main", *keys)

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-t", "main", "-x", str(width), "-y", str(height))

    def wait_for(self, what: str, predicate, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}; the screen shows:\n{screen}")
            time.sleep(0.2)

    def close(self) -> None:
        self.tmux("kill-server", check=False)


def dashboard_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_monitor.py"), "dashboard", *args]


def row(screen: str, camera: str) -> str | None:
    return next((line for line in screen.splitlines() if line.strip().startswith(camera + " ")), None)


def camera_rows(screen: str) -> list[str]:
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"(monitor +)?camera +state ", line))
    out = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        out.append(line)
    return out


@pytest.fixture
def tmux():
    t = Tmux()
    yield t
    t.close()


@pytest.fixture
def feed():
    f = FakeMonitor(cameras=("atrium", "dock-gate"),
                    sources={"dock-gate": "rtsp://admin:hunter2@10.1.2.3/live"}).start()
    yield f
    f.close()


def test_dashboard_connect_shows_cameras_scores_and_an_alert_then_quits_on_q(tmux, feed):
    tmux.start(dashboard_cmd("--connect", feed.endpoint, "--stale-after", "3"))
    screen = tmux.wait_for("a heartbeat and both camera rows, streaming",
                           lambda s: "tiny-test (stage 3)" in s and
                           all("streaming" in (row(s, c) or "") for c in ("atrium", "dock-gate")))
    assert "cameras 2/2 up" in screen and "providers CPU" in screen
    assert max(len(line) for line in screen.splitlines()) > 100          # the real 140 columns, not COLUMNS=80
    assert camera_rows(screen)[0].startswith("atrium")           # alphabetical while nothing is wrong

    feed.trigger_alert("dock-gate")
    screen = tmux.wait_for("the alert", lambda s: "ALERT" in (row(s, "dock-gate") or "") and "recent alerts  (1)" in s)
    rows = camera_rows(screen)
    assert rows[0].startswith("dock-gate")                         # in alert: sorted to the top
    assert re.search(r"\b0\.9\d\d\b", rows[0])                     # its score
    assert re.search(r"\b0\.1\d\d\b", row(screen, "atrium"))
    assert "/tmp/snapshots/dock-gate-0001.jpg" in screen and "● live" in screen
    assert "alerts today 1" in screen
    assert "hunter2" not in screen

    tmux.resize(80, 24)
    screen = tmux.wait_for("the narrower layout", lambda s: len(s.splitlines()[0]) <= 80 and "ALERT" in (row(s, "dock-gate") or ""))
    assert all(len(line) <= 80 for line in screen.splitlines())

    feed.close()                                                   # the monitor goes away
    screen = tmux.wait_for("the quiet-feed banner", lambda s: "FEED QUIET" in s)
    assert "stale" in row(screen, "dock-gate")

    tmux.keys("q")
    screen = tmux.wait_for("the dashboard to exit", lambda s: EXITED.search(s) is not None)
    assert EXITED.search(screen).group(1) == "0"
    assert "SSRL monitor" not in screen                            # the alternate screen is gone


def test_dashboard_quits_on_ctrl_c_and_restores_the_terminal(tmux, feed):
    tmux.start(dashboard_cmd("--connect", feed.endpoint))
    tmux.wait_for("a camera row", lambda s: row(s, "dock-gate") is not None)
    tmux.keys("C-c")
    screen = tmux.wait_for("the dashboard to exit", lambda s: EXITED.search(s) is not None)
    assert EXITED.search(screen).group(1) == "0" and "Traceback" not in screen
    # cooked mode again: what is typed now is echoed by the terminal
    tmux.keys("echo-check")
    tmux.wait_for("the terminal to echo", lambda s: "echo-check" in s, timeout_s=10)


def test_dashboard_waits_and_says_so_when_nothing_publishes(tmux):
    tmux.start(dashboard_cmd("--connect", "tcp://127.0.0.1:9", "--stale-after", "1"))
    tmux.wait_for("the waiting banner", lambda s: "waiting for messages on tcp://127.0.0.1:9" in s)
    tmux.keys("q")
    tmux.wait_for("the dashboard to exit", lambda s: EXITED.search(s) is not None)


def test_dashboard_through_the_broker_shows_every_monitor(tmux, tmp_path):
    from tests.live_helpers import Process, endpoint

    frontend, backend = endpoint(), endpoint()
    broker = Process([str(ROOT / "run_monitor.py"), "broker", "--frontend", frontend, "--backend", backend],
                     tmp_path, "broker")
    feeds = [FakeMonitor("north-box", cameras=("gate", "yard"), connect=frontend).start(),
             FakeMonitor("south-box", cameras=("gate",), connect=frontend).start()]
    try:
        tmux.start(dashboard_cmd("--connect", backend))
        screen = tmux.wait_for("three rows from two monitors",
                               lambda s: "monitors 2" in s and sum("streaming" in line for line in s.splitlines()) == 3)
        assert "cameras 3/3 up" in screen
        feeds[1].trigger_alert("gate")
        screen = tmux.wait_for("south-box's gate in alert", lambda s: "ALERT" in s and "● live" in s)
        top = camera_rows(screen)[0]
        assert top.startswith("south-box") and " gate " in top and "ALERT" in top   # the same name, the right monitor
        north_gate = next(line for line in camera_rows(screen) if line.startswith("north-box") and " gate " in line)
        assert "ALERT" not in north_gate
        tmux.keys("q")
        tmux.wait_for("the dashboard to exit", lambda s: EXITED.search(s) is not None)
    finally:
        for f in feeds:
            f.close()
        broker.terminate()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)


def test_dashboard_refuses_a_bad_endpoint_and_a_non_terminal():
    r = run_cli("dashboard", "--connect", "nonsense")
    assert r.returncode == 2 and "--connect 'nonsense'" in r.stderr, r.stderr
    r = run_cli("dashboard", "--connect", "tcp://127.0.0.1:9")
    assert r.returncode == 2 and "stdout is not one" in r.stderr and "subscribe" in r.stderr, r.stderr
    r = run_cli("dashboard", "--refresh", "0")
    assert r.returncode == 2 and "--refresh must be > 0" in r.stderr
    r = run_cli("--help")
    assert "dashboard" in r.stdout


@pytest.mark.slow
def test_the_monitor_itself_shows_the_dashboard_on_a_terminal(tmux, tmp_path):
    from tests.factories import cached_bundle, dark_bright_dark
    from tests.live_helpers import endpoint

    bundle = cached_bundle()
    video = dark_bright_dark(tmp_path / "door.avi", dark=32, bright=64, after=32)   # an alert every 5 s of video
    tmux.start([sys.executable, str(ROOT / "run_monitor.py"), "--source", f"door={video}", "--loop",
                "--model", str(bundle), "--publish", endpoint(), "--threshold", "0.6", "--status-interval", "0.5",
                "--events", str(tmp_path / "events.db"), "--snapshots", str(tmp_path / "snaps")])
    screen = tmux.wait_for("the camera row with a score",
                           lambda s: re.search(r"\b[01]\.\d{3}\b", row(s, "door") or "") is not None
                           and "streaming" in (row(s, "door") or ""), timeout_s=120)
    assert "test-brightness-s2 (stage 2)" in screen and "cameras 1/1 up" in screen
    screen = tmux.wait_for("an alert", lambda s: "ALERT" in (row(s, "door") or "") and "● live" in s, timeout_s=120)
    assert re.search(r"\b(0\.9\d\d|1\.000)\b", row(screen, "door"))              # the bright stretch scores high
    alert_line = next(line for line in screen.splitlines() if "● live" in line)
    shown = alert_line.split()[-1].lstrip("…")                                   # the end of the snapshot path
    assert shown.endswith(".jpg") and any(str(p).endswith(shown) for p in (tmp_path / "snaps").iterdir())
    tmux.keys("q")                                                               # quits the monitor, not just the view
    screen = tmux.wait_for("the monitor to exit", lambda s: EXITED.search(s) is not None, timeout_s=60)
    assert EXITED.search(screen).group(1) == "0"
    from monitor.messages.event_store import read_store
    assert any(e["event"] == "start" for e in read_store(tmp_path / "events.db"))
