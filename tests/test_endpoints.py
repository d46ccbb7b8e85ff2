"""Endpoints: a bad one is refused by every command with the flag or config key and the
reason (exit 2, one line, no traceback); loopback unless told otherwise; the endpoint
really bound is logged, and binding beyond this machine without CURVE is warned about."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import pytest

from monitor.messages.endpoints import EndpointError, parse
from tests.factories import cached_bundle, dark_bright_dark
from tests.live_helpers import ROOT, Process, Subscriber, free_port, monitor, write_config


def _wait_stderr(proc: Process, text: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        err = proc.stderr()
        if text in err or proc.proc.poll() is not None:
            return err
        time.sleep(0.1)
    return proc.stderr()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("text, bind, reason", [
    ("tcp://127.0.0.1:99999", True, "port 99999 is out of range (1-65535)"),
    ("tcp://127.0.0.1:0", True, "port 0 is not a port to bind; write tcp://HOST:* to bind any free port"),
    ("tcp://127.0.0.1:0", False, "port 0 is not a port to connect to"),
    ("tcp://127.0.0.1", True, "no port"),
    ("tcp://127.0.0.1:", False, "no port"),
    ("tcp://:5556", True, "no host"),
    ("tcp://300.1.2.3:5556", False, "host '300.1.2.3' is not an IPv4 address"),
    ("tcp://bad_host!:5556", False, "is not a host name, an IP address or an interface name"),
    ("tcp://::1:5556", True, "an IPv6 address is written in brackets"),
    ("tcp://[nope]:5556", True, "host [nope] is not an IPv6 address"),
    ("tcp://127.0.0.1:http", True, "port 'http' is not a number"),
    ("tcp://*:5556", False, "host * (every interface) only means something when binding"),
    ("tcp://127.0.0.1:*", False, "port * (any free port) only means something when binding"),
    ("udp://127.0.0.1:5556", True, "scheme 'udp://' is not supported"),
    ("inproc://x", True, "inproc:// only reaches sockets inside one process"),
    ("127.0.0.1:5556", True, "not a ZeroMQ endpoint"),
    ("ipc://", True, "no path"),
    ("ipc:///no/such/dir/sock", True, "directory /no/such/dir does not exist"),
    ("ipc://" + "/x" * 60, False, "longer than a Unix socket path may be"),
])
def test_a_bad_endpoint_is_refused_with_the_reason(text, bind, reason):
    with pytest.raises(EndpointError) as caught:
        parse(text, "--flag", bind=bind)
    assert str(caught.value).startswith(f"--flag {text!r}: ") and reason in str(caught.value), str(caught.value)


@pytest.mark.parametrize("text, bind, local", [
    ("tcp://127.0.0.1:5556", True, True), ("tcp://localhost:5556", False, True), ("tcp://[::1]:5556", True, True),
    ("tcp://127.0.0.1:*", True, True), ("ipc:///tmp/monitor.sock", True, True), ("ipc://@monitor", True, True),
    ("tcp://*:5556", True, False), ("tcp://0.0.0.0:5556", True, False), ("tcp://10.0.0.5:5556", False, False),
    ("tcp://broker.example.org:5559", False, False), ("tcp://eth0:5556", True, False),
])
def test_good_endpoints_and_whether_they_stay_on_this_machine(text, bind, local):
    assert parse(text, "--flag", bind=bind).local is local


def test_the_defaults_bind_loopback():
    from monitor.commands import broker
    from monitor.config import Config

    assert parse(Config().publish.endpoint, "publish.endpoint", bind=True).local
    parser = argparse.ArgumentParser()
    broker.add_arguments(parser)
    args = parser.parse_args([])
    assert parse(args.frontend, "--frontend", bind=True).local and parse(args.backend, "--backend", bind=True).local


@pytest.mark.parametrize("args, line", [
    (("--publish", "tcp://127.0.0.1:99999"), "error: --publish 'tcp://127.0.0.1:99999': port 99999 is out of range"),
    (("--connect", "tcp://*:5559"), "error: --connect 'tcp://*:5559': host * (every interface) only means"),
    (("--publish", "tcp://127.0.0.1"), "error: --publish 'tcp://127.0.0.1': no port"),
    (("subscribe", "tcp://127.0.0.1:0"), "error: endpoint 'tcp://127.0.0.1:0': port 0 is not a port to connect to"),
    (("subscribe", "pgm://239.0.0.1:5556"), "error: endpoint 'pgm://239.0.0.1:5556': scheme 'pgm://' is not supported"),
    (("dashboard", "--connect", "tcp://127.0.0.1:99999"), "error: --connect 'tcp://127.0.0.1:99999': port 99999"),
    (("broker", "--frontend", "tcp://0.0.0.0:0"), "error: --frontend 'tcp://0.0.0.0:0': port 0 is not a port to bind"),
    (("broker", "--backend", "tcp://no such host:5560"), "error: --backend 'tcp://no such host:5560': host 'no such host'"),
    (("replay", "--since", "1h", "--publish", "tcp://127.0.0.1:99999"),
     "error: --publish 'tcp://127.0.0.1:99999': port 99999 is out of range"),
    (("replay", "--since", "1h", "--connect", "tcp://*:5559"), "error: --connect 'tcp://*:5559': host * (every interface)"),
])
def test_every_command_refuses_a_bad_endpoint_in_one_line(args, line):
    r = run_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith(line) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_the_config_endpoint_is_refused_naming_the_file_and_key(tmp_path):
    config = write_config(tmp_path / "bad.toml", '[publish]\nendpoint = "tcp://127.0.0.1:99999"\n')
    r = run_cli("--config", str(config))
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: {config}: key 'publish.endpoint' = 'tcp://127.0.0.1:99999': port 99999 is out of range (1-65535)")
    config = write_config(tmp_path / "bad2.toml", '[publish]\nendpoint = "tcp://*:5559"\nconnect = true\n')
    r = run_cli("--config", str(config))
    assert r.returncode == 2 and "key 'publish.endpoint' = 'tcp://*:5559': host * (every interface)" in r.stderr


def test_a_bind_that_fails_names_the_flag_and_why(tmp_path):
    r = run_cli("--publish", "tcp://192.0.2.1:5556", "--model", str(cached_bundle()), "--no-dashboard",
                "--events", str(tmp_path / "e.db"))
    assert r.returncode == 2 and r.stderr.startswith("error: --publish: cannot bind tcp://192.0.2.1:5556: "), r.stderr


@pytest.mark.slow
def test_any_free_port_every_interface_is_logged_as_bound_and_warned_about(tmp_path):
    """tcp://0.0.0.0:* binds a port ZeroMQ picks: the log names that port (a subscriber on it
    hears the monitor) and warns once that the messages are open to the network."""
    video = dark_bright_dark(tmp_path / "v.avi", fps=50)
    proc = monitor(tmp_path, "--model", str(cached_bundle()), "--source", f"cam={video}", "--loop",
                   "--publish", "tcp://0.0.0.0:*", "--no-dashboard", "--events", str(tmp_path / "e.db"))
    sub = None
    try:
        err = _wait_stderr(proc, " (bind); ")
        found = re.search(r"publishing on tcp://0\.0\.0\.0:(\d+) \(bind\)", err)
        assert found, err
        port = int(found.group(1))
        assert port != 0
        sub = Subscriber(f"tcp://127.0.0.1:{port}", topics=("status",))
        sub.wait_for(lambda ms: ms, "a status message on the port logged", process=proc)
        assert proc.terminate() == 0, proc.stderr()
    finally:
        proc.kill()
        if sub is not None:
            sub.close()
    warnings = [line for line in proc.stderr().splitlines() if "WARNING" in line and "readable by anyone" in line]
    assert len(warnings) == 1 and "every interface" in warnings[0] and "CURVE" in warnings[0], proc.stderr()


def test_a_broker_beyond_loopback_without_curve_warns_for_each_side(tmp_path):
    front, back = f"tcp://0.0.0.0:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    broker = Process([str(ROOT / "run_monitor.py"), "broker", "--frontend", front, "--backend", back],
                     tmp_path, "broker")
    try:
        _wait_stderr(broker, "broker: monitors ->")
        assert broker.terminate() == 0, broker.stderr()
    finally:
        broker.kill()
    err = broker.stderr()
    assert f"monitors -> {front} (every interface), subscribers -> {back}" in err, err
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "frontend" in warnings[0] and "forged" in warnings[0], err


def test_a_replay_beyond_loopback_without_curve_warns(tmp_path):
    """replay binds as the monitor does: an address beyond this machine without CURVE is warned
    about once (here nobody subscribes, so nothing is replayed: exit code 1)."""
    from tests.test_event_store import stored_alerts

    stored_alerts(tmp_path / "events.db", "box", 2)
    r = run_cli("replay", "--db", str(tmp_path / "events.db"), "--since", "1h",
                "--publish", f"tcp://0.0.0.0:{free_port()}", "--wait", "1")
    assert r.returncode == 1 and "no subscriber" in r.stderr and "Traceback" not in r.stderr, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line and "readable by anyone" in line]
    assert len(warnings) == 1 and "every interface" in warnings[0] and "CURVE" in warnings[0], r.stderr
