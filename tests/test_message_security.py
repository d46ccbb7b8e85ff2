"""CURVE on the message path, end to end: keys made by `run_monitor.py keys`, a monitor and a
broker that admit only authorized keys, real subscribers and forgers on loopback.

A failed CURVE handshake is silent on the wire, so "receives nothing" is asserted as silence
over the same stretch of time in which an allowed client on the same socket does receive."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from monitor import config as cfgmod
from tests.factories import cached_bundle, dark_bright_dark
from tests.live_helpers import ROOT, TIMEOUT, Process, endpoint, monitor, write_config
from tests.test_event_store import stored_alerts

COMMON = ("--no-dashboard", "--status-interval", "0.5", "--log-level", "info")
SUBSCRIBE = str(ROOT / "run_monitor.py"), "subscribe"


def run_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL, env=env)


def make_keys(folder: Path, *names: str) -> Path:
    r = run_cli("keys", "--out", str(folder), *[a for n in names for a in ("--name", n)])
    assert r.returncode == 0, r.stderr
    return folder


def secret_of(path: Path) -> str:
    return zmq.auth.load_certificate(path)[1].decode()


def authorized(folder: Path, *publics: Path) -> Path:
    folder.mkdir()
    for public in publics:
        shutil.copy(public, folder / public.name)
    return folder


def json_lines(proc: Process) -> list[dict]:
    out = []
    for line in proc.stdout().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def wait(predicate, what: str, *procs: Process, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for proc in procs:
            if proc.proc.poll() is not None:
                raise AssertionError(f"{proc.proc.args[1:3]} exited ({proc.proc.returncode}) before {what}; "
                                     f"stderr:\n{proc.stderr()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s")


def alerts_from(proc: Process, monitor_id: str) -> list[dict]:
    return [m for m in json_lines(proc) if m.get("topic", "").startswith("alert.") and m.get("monitor") == monitor_id]


# ----------------------------------------------------------------------------- keys and settings

def test_keys_makes_pairs_with_private_secret_files_and_never_overwrites(tmp_path):
    out = tmp_path / "keys"
    r = run_cli("keys", "--out", str(out))
    assert r.returncode == 0, r.stderr
    for name in ("server", "client"):
        public, secret = zmq.auth.load_certificate(out / f"{name}.key_secret")
        assert zmq.curve_public(secret) == public == zmq.auth.load_certificate(out / f"{name}.key")[0]
        assert stat.S_IMODE((out / f"{name}.key_secret").stat().st_mode) == 0o600
        assert secret.decode() not in r.stdout + r.stderr  # never printed
    assert zmq.auth.load_certificate(out / "authorized" / "client.key")[0] == zmq.auth.load_certificate(out / "client.key")[0]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    before = (out / "server.key_secret").read_bytes()
    again = run_cli("keys", "--out", str(out), "--name", "server")
    assert again.returncode == 2 and "already exists; keys are never overwritten" in again.stderr
    assert (out / "server.key_secret").read_bytes() == before
    r = run_cli("keys", "--out", str(out), "--name", "viewer")
    assert r.returncode == 0 and (out / "viewer.key").is_file() and not (out / "authorized" / "viewer.key").exists()


def _config(tmp_path, security: str, publish: str = "") -> Path:
    return write_config(tmp_path / "sec.toml", f"{publish}\n[security]\n{security}\n")


def test_the_security_section_is_checked_naming_file_key_and_reason(tmp_path):
    keys = make_keys(tmp_path / "k")
    good = f'curve_key = "{keys}/server.key_secret"\ncurve_authorized = "{keys}/authorized"'
    server = cfgmod.curve_settings(cfgmod.load(_config(tmp_path, good)))
    assert server.allowed == {zmq.auth.load_certificate(keys / "client.key")[0]}
    cases = [
        (f'curve_key = "{keys}/nope.key_secret"', "key 'security.curve_key' = ", "no such key file"),
        (f'curve_key = "{keys}/server.key"', "key 'security.curve_key' = ", "holds only a public key"),
        (f'curve_key = "{keys}"', "key 'security.curve_key' = ", "a directory, not a key file"),
        (f'curve_authorized = "{tmp_path}"', "key 'security.curve_authorized' = ", "no public key files (*.key)"),
        (f'curve_server_key = "{tmp_path / "sec.toml"}"', "key 'security.curve_server_key' = ", "not a key file"),
        ('curve_key = "env:SSRL_TEST_UNSET_KEY"', "key 'security.curve_key' = ", "SSRL_TEST_UNSET_KEY is not set"),
        (f'curve_key = "{secret_of(keys / "server.key_secret")}"', "key 'security.curve_key'", "looks like a key itself"),
        ("curve_keys = 1", "key 'security.curve_keys' is not a known setting", ""),
    ]
    for text, where, reason in cases:
        with pytest.raises(cfgmod.ConfigError) as caught:
            cfgmod.curve_settings(cfgmod.load(_config(tmp_path, text)))
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / 'sec.toml'}: {where}") and reason in message, message
        assert secret_of(keys / "server.key_secret") not in message
    # A pair without the keys it works with: named by the setting that is there.
    with pytest.raises(cfgmod.ConfigError, match="publishing with CURVE needs the subscribers allowed in"):
        cfgmod.curve_settings(cfgmod.load(_config(tmp_path, f'curve_key = "{keys}/server.key_secret"')))
    with pytest.raises(cfgmod.ConfigError, match="connecting to a broker with CURVE needs the broker's public key"):
        cfgmod.curve_settings(cfgmod.load(_config(tmp_path, f'curve_key = "{keys}/client.key_secret"',
                                                  '[publish]\nendpoint = "tcp://127.0.0.1:5559"\nconnect = true')))


def test_a_secret_key_can_come_from_the_environment(tmp_path):
    keys = make_keys(tmp_path / "k")
    env = dict(os.environ, SSRL_TEST_SUB_KEY=secret_of(keys / "client.key_secret"))
    # Refused for the missing server key, after reading the secret key from the environment.
    r = run_cli("subscribe", "tcp://127.0.0.1:5556", "--curve-key", "env:SSRL_TEST_SUB_KEY", env=env)
    assert r.returncode == 2 and r.stderr.strip() == "error: --curve-key needs --curve-server-key (the server's public key file)"
    r = run_cli("subscribe", "tcp://127.0.0.1:5556", "--curve-key", "env:SSRL_TEST_SUB_KEY", "--curve-server-key",
                str(keys / "server.key"), "--timeout", "0.5", env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("subscribe", "--curve-key", secret_of(keys / "client.key_secret"), "--curve-server-key",
                str(keys / "server.key"))
    assert r.returncode == 2 and "looks like a key itself" in r.stderr and secret_of(keys / "client.key_secret") not in r.stderr
    for command in (("dashboard", "--curve-server-key", str(keys / "server.key")),
                    ("broker", "--curve-authorized-publishers", str(keys / "authorized"),
                     "--curve-authorized-subscribers", str(keys / "authorized")),
                    ("--curve-authorized", str(keys / "authorized"))):
        r = run_cli(*command, "--curve-key", str(keys / "missing.key_secret"))
        assert r.returncode == 2 and "--curve-key" in r.stderr and "no such key file" in r.stderr, (command, r.stderr)


# ----------------------------------------------------------------------------- a monitor that binds

@pytest.mark.slow
def test_only_an_authorized_subscriber_hears_a_curve_monitor(tmp_path):
    keys = make_keys(tmp_path / "k")
    make_keys(tmp_path / "other", "stranger")
    ep = endpoint()
    video = dark_bright_dark(tmp_path / "door.avi", dark=64, bright=48, after=64, fps=50)
    config = write_config(tmp_path / "secure.toml", f"""
[monitor]
id = "secure"
[model]
path = "{cached_bundle()}"
[publish]
endpoint = "{ep}"
[log]
events = "{tmp_path / 'events.db'}"
[security]
curve_key = "{keys / 'server.key_secret'}"
curve_authorized = "{keys / 'authorized'}"
[[cameras]]
name = "door"
url = "{video}"
loop = true
""")
    server_public = str(keys / "server.key")
    allowed = Process([*SUBSCRIBE, ep, "--json", "--curve-key", str(keys / "client.key_secret"),
                       "--curve-server-key", server_public], tmp_path, "allowed")
    stranger = Process([*SUBSCRIBE, ep, "--json", "--curve-key", str(tmp_path / "other" / "stranger.key_secret"),
                        "--curve-server-key", server_public], tmp_path, "stranger")
    plain = Process([*SUBSCRIBE, ep, "--json"], tmp_path, "plain")
    mon = monitor(tmp_path, "--config", str(config), *COMMON)
    try:
        # ... and the two others told, whenever their handshakes came, that they were refused.
        wait(lambda: {"start", "end"} <= {m["event"] for m in alerts_from(allowed, "secure")}
             and "refused this client's CURVE key" in stranger.stderr() and "uses CURVE" in plain.stderr()
             and "refused a subscriber with an unknown CURVE key" in mon.stderr(),
             "an alert start and end at the authorized subscriber, and the others refused", mon, allowed, stranger,
             plain)
        assert mon.terminate() == 0, mon.stderr()
        for sub in (allowed, stranger, plain):
            assert sub.terminate() == 0, (sub.proc.args, sub.stderr())
    finally:
        for proc in (mon, allowed, stranger, plain):
            proc.kill()
    assert stranger.stdout() == "" and "refused this client's CURVE key" in stranger.stderr(), stranger.stderr()
    assert plain.stdout() == "" and "uses CURVE" in plain.stderr(), plain.stderr()
    err = mon.stderr()
    stranger_public = zmq.auth.load_certificate(tmp_path / "other" / "stranger.key")[0].decode()
    assert f"refused a subscriber with an unknown CURVE key {stranger_public}" in err, err
    assert "CURVE on" in err and "readable by anyone" not in err, err
    print(f"CURVE monitor: authorized subscriber {len(json_lines(allowed))} messages "
          f"({len(alerts_from(allowed, 'secure'))} alerts), unknown key {len(json_lines(stranger))}, plain "
          f"{len(json_lines(plain))}")
    secrets = [secret_of(keys / "server.key_secret"), secret_of(keys / "client.key_secret")]
    for name, text in (("monitor", err), ("monitor stdout", mon.stdout()), ("allowed", allowed.stdout()),
                       ("allowed stderr", allowed.stderr()), ("stranger", stranger.stderr()), ("plain", plain.stderr())):
        assert not any(secret in text for secret in secrets), f"a secret key in the {name} output"


@pytest.mark.slow
def test_the_dashboard_takes_client_keys(tmp_path):
    """`dashboard --connect` with the client's keys shows a CURVE monitor's camera; with a key
    the monitor does not know it shows none, and says why once the screen is restored."""
    from tests.test_dashboard_terminal import EXITED, Tmux, dashboard_cmd, row

    keys = make_keys(tmp_path / "k")
    make_keys(tmp_path / "other", "stranger")
    ep = endpoint()
    video = dark_bright_dark(tmp_path / "door.avi", fps=50)
    mon = monitor(tmp_path, "--model", str(cached_bundle()), "--source", f"door={video}", "--loop", "--publish", ep,
                  "--curve-key", str(keys / "server.key_secret"), "--curve-authorized", str(keys / "authorized"),
                  "--events", str(tmp_path / "events.db"), *COMMON)
    server = str(keys / "server.key")
    allowed, stranger = Tmux(), Tmux()
    try:
        allowed.start(dashboard_cmd("--connect", ep, "--curve-key", str(keys / "client.key_secret"),
                                    "--curve-server-key", server))
        stranger.start(dashboard_cmd("--connect", ep, "--curve-key", str(tmp_path / "other" / "stranger.key_secret"),
                                     "--curve-server-key", server, "--stale-after", "1"))
        allowed.wait_for("the CURVE monitor's camera, streaming", lambda s: "streaming" in (row(s, "door") or ""),
                         timeout_s=120)
        screen = stranger.screen()
        assert row(screen, "door") is None, screen   # over the same time: nothing
        stranger.keys("q")
        screen = stranger.wait_for("the refused dashboard to exit", lambda s: EXITED.search(s) is not None)
        assert "refused this client's CURVE key" in screen, screen
        allowed.keys("q")
        allowed.wait_for("the dashboard to exit", lambda s: EXITED.search(s) is not None)
        assert mon.terminate() == 0, mon.stderr()
    finally:
        allowed.close()
        stranger.close()
        mon.kill()


# ----------------------------------------------------------------------------- a broker

class Forger:
    """PUB sockets that connect to a broker's frontend and keep sending a forged alert."""

    def __init__(self, frontend: str, curves=()):
        self.context = zmq.Context()
        self.sockets = []
        for curve in (None, *curves):  # plain, then each (pair, server public) given
            sock = self.context.socket(zmq.PUB)
            sock.setsockopt(zmq.LINGER, 0)
            if curve is not None:
                (public, secret), server = curve
                sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server
            sock.connect(frontend)
            self.sockets.append(sock)
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        forged = {"schema": 1, "monitor": "forged", "seq": 0, "camera": "door", "ts": "2026-01-01T00:00:00.000Z",
                  "type": "alert", "event": "start", "alert_id": "forged-1", "score": 1.0, "threshold": 0.5,
                  "frames": [0, 15]}
        while not self.stop.wait(0.05):
            for sock in self.sockets:
                forged["seq"] += 1
                sock.send_multipart([b"alert.door", json.dumps(forged).encode()])
        self.sent = forged["seq"]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close(0)
        self.context.term()


@pytest.mark.slow
def test_a_curve_broker_relays_its_monitors_and_nothing_forged(tmp_path):
    k = make_keys(tmp_path / "k", "broker", "site", "viewer", "forger")
    publishers = authorized(tmp_path / "publishers", k / "site.key")
    subscribers = authorized(tmp_path / "subscribers", k / "viewer.key")
    front, back = endpoint(), endpoint()
    broker = Process([str(ROOT / "run_monitor.py"), "broker", "--frontend", front, "--backend", back,
                      "--curve-key", str(k / "broker.key_secret"), "--curve-authorized-publishers", str(publishers),
                      "--curve-authorized-subscribers", str(subscribers)], tmp_path, "broker")
    video = dark_bright_dark(tmp_path / "door.avi", dark=64, bright=48, after=64, fps=50)
    mon = monitor(tmp_path, "--model", str(cached_bundle()), "--source", f"door={video}", "--loop",
                  "--connect", front, "--monitor-id", "site", "--curve-key", str(k / "site.key_secret"),
                  "--curve-server-key", str(k / "broker.key"), "--events", str(tmp_path / "events.db"), *COMMON)
    viewer = Process([*SUBSCRIBE, back, "--json", "--curve-key", str(k / "viewer.key_secret"),
                      "--curve-server-key", str(k / "broker.key")], tmp_path, "viewer")
    broker_public = zmq.auth.load_certificate(k / "broker.key")[0]
    # Plain; an unknown key; and a key the broker does know, as a subscriber's, not a publisher's.
    forger = Forger(front, [(zmq.auth.load_certificate(k / f"{name}.key_secret"), broker_public)
                            for name in ("forger", "viewer")])
    try:
        wait(lambda: {"start", "end"} <= {m["event"] for m in alerts_from(viewer, "site")},
             "the monitor's alert start and end through the broker", mon, viewer, broker)
        assert mon.terminate() == 0, mon.stderr()
        assert viewer.terminate() == 0, viewer.stderr()
        assert broker.terminate() == 0, broker.stderr()
    finally:
        forger.close()
        for proc in (mon, viewer, broker):
            proc.kill()
    monitors = {m.get("monitor") for m in json_lines(viewer) if "monitor" in m}
    assert monitors == {"site"}, monitors  # nothing forged was relayed
    assert "refused a publisher with an unknown CURVE key" in broker.stderr()
    real = [m for m in json_lines(viewer) if m.get("monitor") == "site"]
    print(f"CURVE broker: {forger.sent} forged alerts sent by 3 forgers, 0 relayed; {len(real)} real messages relayed")


def test_without_curve_a_forged_alert_is_relayed_as_real(tmp_path):
    """The risk CURVE removes: anyone who reaches a plain broker's frontend can publish."""
    front, back = endpoint(), endpoint()
    broker = Process([str(ROOT / "run_monitor.py"), "broker", "--frontend", front, "--backend", back],
                     tmp_path, "broker")
    viewer = Process([*SUBSCRIBE, back], tmp_path, "viewer")
    forger = Forger(front)
    try:
        wait(lambda: "ALERT START door" in viewer.stdout(), "the forged alert at the subscriber", viewer, broker)
    finally:
        forger.close()
        viewer.kill()
        broker.kill()
    assert "forged ALERT START door: score 1.000" in viewer.stdout()
    print(f"plain broker: {forger.sent} forged alerts sent, {viewer.stdout().count('forged ALERT START')} printed by subscribe")


# ----------------------------------------------------------------------------- replay

@pytest.mark.parametrize("where", ["flags", "config"])
def test_replay_reaches_a_curve_subscriber_and_nobody_else(tmp_path, where):
    """replay takes run's CURVE flags (or the monitor's [security] through --config): an
    authorized subscriber catches up on the stored alerts, one with an unknown key is refused
    by the replay's gatekeeper and receives nothing."""
    keys = make_keys(tmp_path / "k")
    make_keys(tmp_path / "other", "stranger")
    rows = stored_alerts(tmp_path / "events.db", "box", 3)
    ep = endpoint()
    server_public = str(keys / "server.key")
    if where == "flags":
        secured = ["--db", str(tmp_path / "events.db"), "--curve-key", str(keys / "server.key_secret"),
                   "--curve-authorized", str(keys / "authorized")]
    else:  # the monitor's own configuration: its store and its [security] section
        secured = ["--config", str(_config(tmp_path, f'curve_key = "{keys / "server.key_secret"}"\n'
                                                     f'curve_authorized = "{keys / "authorized"}"',
                                           f'[log]\nevents = "{tmp_path / "events.db"}"'))]
    replay = Process([str(ROOT / "run_monitor.py"), "replay", "--since", "1h", "--publish", ep, *secured,
                      "--wait", "90"], tmp_path, "replay")
    stranger = Process([*SUBSCRIBE, ep, "--json", "--curve-key", str(tmp_path / "other" / "stranger.key_secret"),
                        "--curve-server-key", server_public], tmp_path, "stranger")
    allowed = None
    try:
        # The stranger is turned away first; only then does the authorized subscriber come.
        wait(lambda: "refused a subscriber with an unknown CURVE key" in replay.stderr(),
             "the replay refusing the stranger's key", replay, stranger)
        allowed = Process([*SUBSCRIBE, ep, "--json", "--curve-key", str(keys / "client.key_secret"),
                           "--curve-server-key", server_public], tmp_path, "allowed")
        wait(lambda: len(alerts_from(allowed, "box")) >= 3, "three replayed alerts at the authorized subscriber",
             allowed)
        assert replay.wait() == 0, replay.stderr()
        for sub in (allowed, stranger):
            assert sub.terminate() == 0, (sub.proc.args, sub.stderr())
    finally:
        for proc in (replay, stranger, allowed):
            if proc is not None:
                proc.kill()
    got = alerts_from(allowed, "box")
    assert [m["seq"] for m in got] == [0, 1, 2] and all(m["replayed"] is True for m in got), got
    assert [m["alert_id"] for m in got] == [r["alert_id"] for r in rows]
    assert stranger.stdout() == "", stranger.stdout()
    err = replay.stderr()
    assert "CURVE on" in err and "replayed 3 alert event(s)" in err and "readable by anyone" not in err, err
    assert secret_of(keys / "server.key_secret") not in err + allowed.stderr() + stranger.stderr()


def test_replay_refuses_curve_flags_that_do_not_fit(tmp_path):
    keys = make_keys(tmp_path / "k")
    stored_alerts(tmp_path / "events.db", "box", 1)
    base = ("replay", "--db", str(tmp_path / "events.db"), "--since", "1h", "--publish", endpoint())
    for extra, words in (
            (("--curve-key", str(keys / "server.key_secret")), ("--curve-key", "curve_authorized")),
            (("--curve-key", str(tmp_path / "none.key_secret"), "--curve-authorized", str(keys / "authorized")),
             ("--curve-key", "no such key file"))):
        r = run_cli(*base, *extra)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and all(w in r.stderr for w in words), r.stderr


def test_replay_through_a_curve_broker_with_a_publisher_key(tmp_path):
    """replay --connect takes a publisher's key pair and the broker's public key, as run does:
    the broker admits it at its frontend and its subscribers catch up."""
    k = make_keys(tmp_path / "k", "broker", "site", "viewer")
    publishers = authorized(tmp_path / "publishers", k / "site.key")
    subscribers = authorized(tmp_path / "subscribers", k / "viewer.key")
    stored_alerts(tmp_path / "events.db", "site", 3)
    front, back = endpoint(), endpoint()
    broker = Process([str(ROOT / "run_monitor.py"), "broker", "--frontend", front, "--backend", back,
                      "--curve-key", str(k / "broker.key_secret"), "--curve-authorized-publishers", str(publishers),
                      "--curve-authorized-subscribers", str(subscribers)], tmp_path, "broker")
    viewer = Process([*SUBSCRIBE, back, "--json", "--curve-key", str(k / "viewer.key_secret"),
                      "--curve-server-key", str(k / "broker.key")], tmp_path, "viewer")
    replay = Process([str(ROOT / "run_monitor.py"), "replay", "--db", str(tmp_path / "events.db"), "--since", "1h",
                      "--connect", front, "--curve-key", str(k / "site.key_secret"),
                      "--curve-server-key", str(k / "broker.key"), "--wait", "90"], tmp_path, "replay")
    try:
        wait(lambda: len(alerts_from(viewer, "site")) >= 3, "three replayed alerts through the broker",
             broker, viewer)
        assert replay.wait() == 0, replay.stderr()
        assert viewer.terminate() == 0, viewer.stderr()
        assert broker.terminate() == 0, broker.stderr()
    finally:
        for proc in (replay, viewer, broker):
            proc.kill()
    got = alerts_from(viewer, "site")
    assert [m["seq"] for m in got] == [0, 1, 2] and all(m["replayed"] for m in got), got
    assert "CURVE on" in replay.stderr() and "refused" not in broker.stderr(), broker.stderr()
