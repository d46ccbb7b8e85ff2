"""Left alone under a service manager, and asked how it is.

- A real run_monitor.py subprocess with NOTIFY_SOCKET naming a real Unix datagram socket (a
  path, and the abstract namespace systemd also uses) says READY=1, a STATUS= line with its
  health, WATCHDOG=1 at least twice per WATCHDOG_USEC, and STOPPING=1 when told to stop.
- The watchdog pings follow the scoring, not a clock: while a real engine's scoring workers
  cannot go round (its condition held by the test) no ping goes out, and they come back after.
- `health` against real monitors: healthy, exit 0; a camera whose stream is not there,
  exit 1 naming it; nobody publishing, exit 1 saying so; bad flags, exit 2 in one line.
- `metrics` against a real monitor, scraped over real HTTP and parsed by prometheus_client's
  own parser: the camera streaming, counters that grow, and the monitor marked down (ssrl_up 0)
  once it has been stopped and gone silent; a bad or taken --listen address, exit 2."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from monitor.messages.health import judge
from monitor.messages.service_notify import ServiceNotifier
from tests.factories import cached_bundle, write_video
from tests.live_helpers import ROOT, endpoint, free_port, monitor

COMMON = ("--no-dashboard", "--status-interval", "0.3", "--log-level", "info")


class NotifySocket:
    """The service manager's end: a bound datagram socket that keeps what it receives, in order."""

    def __init__(self, address: str):
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.socket.settimeout(0.2)
        self.received: list[tuple[float, str]] = []

    def wait_for(self, predicate, what: str, timeout: float = 90.0, process=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.texts()):
                return
            if process is not None and process.proc.poll() is not None:
                self.read(0.5)
                if predicate(self.texts()):
                    return
                raise AssertionError(f"the monitor exited ({process.proc.returncode}) before {what}: "
                                     f"{process.stderr()[-2000:]}")
            self.read(0.2)
        raise AssertionError(f"no {what} within {timeout} s; heard {self.texts()[-5:]}")

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.received.append((time.monotonic(), self.socket.recv(4096).decode()))
            except socket.timeout:
                pass

    def texts(self) -> list[str]:
        return [t for _, t in self.received]

    def pings(self) -> list[float]:
        return [at for at, t in self.received if t == "WATCHDOG=1"]

    def close(self) -> None:
        self.socket.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_a_monitor_under_a_service_manager_says_ready_health_pings_and_stopping(tmp_path, monkeypatch, abstract):
    address = f"@ssrl-notify-{uuid.uuid4().hex}" if abstract else str(tmp_path / "notify")
    manager = NotifySocket(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    proc = looped_monitor(tmp_path, "lobby", endpoint())
    try:
        manager.wait_for(lambda ts: any(t.startswith("READY=1") for t in ts), "READY=1", process=proc)
        manager.wait_for(lambda ts: any("healthy: monitor lobby" in t and "1/1 cameras streaming" in t for t in ts),
                         "a healthy STATUS= line", process=proc)
        manager.wait_for(lambda ts: ts.count("WATCHDOG=1") >= 6, "six watchdog pings", process=proc)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.stderr()
        manager.read(0.5)
    finally:
        proc.kill()
        manager.close()
    texts = manager.texts()
    ready = next(t for t in texts if t.startswith("READY=1"))
    assert ready == "READY=1\nSTATUS=scoring 1 camera(s)", ready
    assert texts.index(ready) < texts.index("WATCHDOG=1")         # ready before the first ping
    assert texts[-1] == "STOPPING=1", texts[-3:]
    pings = manager.pings()
    # Twice per second asked for; none more than the whole period apart.
    assert max(b - a for a, b in zip(pings, pings[1:])) < 1.0, pings
    assert "service manager: notifying" in proc.stderr() and "watchdog every 1 s" in proc.stderr()


def test_watchdog_pings_stop_while_scoring_cannot_go_round(tmp_path):
    from monitor.commands.run import ServiceWatch
    from monitor.config import CameraConfig, Config
    from monitor.engine import Engine
    from monitor.messages.publisher import Publisher
    from monitor.model.bundle import Bundle

    manager = NotifySocket(str(tmp_path / "notify"))
    config = Config()
    config.log.snapshots = None
    config.cameras = [CameraConfig(url=str(write_video(tmp_path / "door.avi", [(64, 40)])), name="door", loop=True)]
    publisher = Publisher(f"inproc://service-{uuid.uuid4().hex}", "service")
    engine = Engine(config, Bundle(cached_bundle(), providers=["cpu"]), publisher)
    watch = ServiceWatch(ServiceNotifier(manager.address, watchdog_s=0.6), engine, publisher)

    def tick_for(seconds: float) -> list[float]:
        before = len(manager.pings())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            watch.tick()
            manager.read(0.05)
        return manager.pings()[before:]

    try:
        engine.start()
        watch.started()
        assert len(tick_for(2.0)) >= 3                             # scoring goes round: pings
        with engine._cond:                                         # the workers' loop cannot pass _next_batch
            time.sleep(0.8)                                        # ... for longer than the period
            assert not engine.scoring_alive(0.6) and engine.loop_age_s() > 0.6
            held = tick_for(1.5)
        assert held == [], held                                    # hung: systemd would restart it
        assert len(tick_for(2.0)) >= 2 and engine.scoring_alive(0.6)   # going round again: pings again
    finally:
        engine.stop()
        engine.join()
        engine.close_alerts()
        publisher.close()
        watch.stopping()
        manager.read(0.2)
        manager.close()
    assert manager.texts()[-1] == "STOPPING=1"


def test_without_a_service_manager_nothing_is_sent_and_a_missing_socket_is_survived(tmp_path):
    quiet = ServiceNotifier.from_environment({})
    assert not quiet.active and quiet.watchdog_s is None
    quiet.ready("x")
    quiet.watchdog()                                                # no socket, nothing to do
    gone = ServiceNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "nobody"), "WATCHDOG_USEC": "5000000",
                                             "WATCHDOG_PID": "1"})
    assert gone.active and gone.watchdog_s is None                  # a watchdog meant for another process
    gone.ready("x")
    gone.status("y")                                                # ENOENT: logged once, not raised
    assert ServiceNotifier.from_environment({"WATCHDOG_USEC": "2500000"}).watchdog_s == 2.5


def looped_monitor(tmp_path, monitor_id: str, ep: str, *sources: str):
    """run_monitor.py on `sources` (a door: a looped file, first), publishing on `ep`."""
    video = write_video(tmp_path / "door.avi", [(64, 40)])
    return monitor(tmp_path, "--source", f"door={video}", *sources, "--loop", "--model", str(cached_bundle()),
                   "--monitor-id", monitor_id, "--publish", ep, *COMMON, name=monitor_id)


def health(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "health", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_health_of_real_monitors(tmp_path):
    good_ep, bad_ep = endpoint(), endpoint()
    good = looped_monitor(tmp_path, "good", good_ep)
    # A second camera whose RTSP server is not there: retried, reported reconnecting.
    bad = looped_monitor(tmp_path, "bad", bad_ep, "--source", f"gate=rtsp://127.0.0.1:{free_port()}/cam")
    try:
        deadline = time.monotonic() + 90
        while True:
            ok = health(good_ep, "--wait", "30")
            if ok.returncode == 0 and "1/1 cameras streaming" in ok.stdout or time.monotonic() > deadline:
                break
        assert ok.returncode == 0, (ok.stdout, ok.stderr, good.stderr()[-2000:])
        assert ok.stdout.startswith("healthy: monitor good, up ") and "0 alerts today" in ok.stdout, ok.stdout
        while True:
            sick = health(bad_ep, "--wait", "30", "--json")
            verdict = json.loads(sick.stdout) if sick.stdout.strip() else {}
            if sick.returncode == 1 and verdict.get("problems") or time.monotonic() > deadline:
                break
        assert sick.returncode == 1 and verdict["monitor"] == "bad" and not verdict["healthy"], (sick.stdout,
                                                                                                 sick.stderr)
        assert len(verdict["problems"]) == 1 and verdict["problems"][0].startswith("camera gate reconnecting ("), verdict
        assert "1/2 cameras streaming" in verdict["summary"], verdict
        for proc in (good, bad):
            assert proc.terminate() == 0, proc.stderr()
    finally:
        good.kill()
        bad.kill()
    silent = health(good_ep, "--wait", "1")                          # the monitor has gone
    assert silent.returncode == 1 and silent.stdout.strip() == (
        f"UNHEALTHY: no status from any monitor at {good_ep} within 1 s"), silent.stdout


@pytest.mark.parametrize("args, names", [(("--wait", "0"), "--wait 0"), (("--max-loop-s", "-1"), "--max-loop-s -1"),
                                         (("tcp://127.0.0.1",), "endpoint"),
                                         (("--curve-key", "k.key_secret"), "--curve-key")])
def test_health_refuses_bad_flags_in_one_line(args, names):
    r = health(*args)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r
    assert names in r.stderr, r.stderr


def test_a_status_is_judged_by_its_cameras_faults_and_scoring():
    status = {"monitor": "lobby", "uptime_s": 3600.4, "alerts_today": 3, "faults": [],
              "engine": {"loop_age_s": 0.2},
              "cameras": [{"camera": "door", "state": "streaming", "in_alert": True},
                          {"camera": "tape", "state": "ended"}, {"camera": "yard", "state": "starting"}]}
    h = judge(status)
    assert h.healthy and h.line() == ("healthy: monitor lobby, up 3600 s, 1/3 cameras streaming, 1 starting, 1 ended, "
                                      "3 alerts today, 1 in alert now")
    status["cameras"][2] = {"camera": "yard", "state": "stalled", "reason": "no new frame for 10 s"}
    status["faults"] = [{"kind": "event_log", "message": "events.db: database or disk is full"}]
    status["engine"]["loop_age_s"] = 400.0
    h = judge(status, max_loop_s=300)
    assert not h.healthy and h.problems == ["camera yard stalled (no new frame for 10 s)",
                                            "fault event_log: events.db: database or disk is full",
                                            "scoring has not gone round for 400 s (more than 300 s: hung?)"]
    assert h.line().startswith("UNHEALTHY: monitor lobby, up 3600 s, 1/3 cameras streaming, 1 ended")


def test_a_camera_that_dropped_snippets_since_the_status_before_is_falling_behind():
    def status(uptime, dropped):
        return {"monitor": "lobby", "uptime_s": uptime, "faults": [], "engine": {"loop_age_s": 0.1},
                "cameras": [{"camera": "door", "state": "streaming", "dropped_snippets": dropped},
                            {"camera": "yard", "state": "streaming", "dropped_snippets": 7}]}
    assert judge(status(100.0, 3)).healthy                        # alone, a count since start says nothing
    assert judge(status(102.0, 3), before=status(100.0, 3)).healthy   # dropped long ago, none since
    h = judge(status(102.0, 5), before=status(100.0, 3))
    assert not h.healthy and h.problems == [
        "camera door falling behind (2 snippets dropped in 2.0 s: the machine does not keep up)"]
    assert judge(status(1.0, 0), before=status(100.0, 3)).healthy  # restarted in between: nothing to compare


# ----------------------------------------------------------------------------- Prometheus metrics

def scrape(port: int) -> dict[tuple, float]:
    """GET /metrics, parsed by prometheus_client's own parser -> {(sample name, labels...): value}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.slow
def test_metrics_serve_a_monitors_status_and_mark_it_down_when_it_goes_silent(tmp_path):
    from tests.live_helpers import Process
    ep, port = endpoint(), free_port()
    mon = looped_monitor(tmp_path, "lobby", ep)
    metrics = Process([str(ROOT / "run_monitor.py"), "metrics", ep, "--listen", f"127.0.0.1:{port}",
                       "--stale-s", "2"], tmp_path, "metrics")
    door = (("camera", "door"), ("monitor", "lobby"))
    lobby = (("monitor", "lobby"),)

    def until(predicate, what: str, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except OSError:          # not serving yet
                samples = {}
            if predicate(samples):
                return samples
            assert metrics.proc.poll() is None, metrics.stderr()
            time.sleep(0.3)
        raise AssertionError(f"no {what} within {timeout} s: {metrics.stderr()[-2000:]}")

    try:
        first = until(lambda s: s.get(("ssrl_camera_streaming", *door)) == 1 and
                      s.get(("ssrl_engine_snippets_total", *lobby), 0) > 0, "the door streaming and scored")
        assert first[("ssrl_up", *lobby)] == 1 and first[("ssrl_healthy", *lobby)] == 1
        assert first[("ssrl_camera_state", ("camera", "door"), ("monitor", "lobby"), ("state", "streaming"))] == 1
        assert first[("ssrl_camera_state", ("camera", "door"), ("monitor", "lobby"), ("state", "stalled"))] == 0
        assert 0 <= first[("ssrl_camera_score", *door)] <= 1
        later = until(lambda s: s.get(("ssrl_engine_snippets_total", *lobby), 0)
                      > first[("ssrl_engine_snippets_total", *lobby)] and s.get(("ssrl_camera_input_fps", *door), 0) > 0,
                      "more snippets scored, at a frame rate")
        assert later[("ssrl_uptime_seconds", *lobby)] > first[("ssrl_uptime_seconds", *lobby)]
        assert mon.terminate() == 0, mon.stderr()
        gone = until(lambda s: s.get(("ssrl_up", *lobby)) == 0, "the silent monitor marked down")
        assert gone[("ssrl_healthy", *lobby)] == 0 and gone[("ssrl_status_age_seconds", *lobby)] > 2
        assert metrics.terminate() == 0, metrics.stderr()
    finally:
        mon.kill()
        metrics.kill()
    assert f"Prometheus metrics on http://127.0.0.1:{port}/metrics" in metrics.stderr()


def test_metrics_refuse_a_bad_listen_address_or_a_taken_port_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        for listen, words in (("nope", "give HOST:PORT"), ("127.0.0.1:99999", "give HOST:PORT"),
                              (f"127.0.0.1:{busy}", "cannot serve there")):
            r = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "metrics", "--listen", listen],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (listen, r.stderr)
            assert f"--listen {listen}" in r.stderr.replace("'", "") and words in r.stderr, r.stderr
