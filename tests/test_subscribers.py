"""Subscribers that misbehave and a broker that restarts, end to end: real run_monitor.py
subprocesses, real ZeroMQ sockets and raw TCP clients on loopback. Nothing here asserts on
speed; every wait polls for a condition."""
from __future__ import annotations

import json
import time

import pytest
import zmq

from monitor.messages.event_store import read_store
from tests.factories import cached_bundle, dark_bright_dark
from tests.live_helpers import ROOT, TIMEOUT, Process, Subscriber, endpoint, monitor, write_config
from tests.zmtp_helpers import RawSubscriber, silent_client

COMMON = ("--no-dashboard", "--log-level", "info")


@pytest.fixture(scope="module")
def bundle():
    return cached_bundle()


def _port(ep: str) -> int:
    return int(ep.rsplit(":", 1)[1])


def _json_lines(proc: Process) -> list[dict]:
    out = []
    for line in proc.stdout().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut short while it is being written
    return out


def _wait(predicate, what: str, *procs: Process, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if proc.proc.poll() is not None:
                raise AssertionError(f"{proc.proc.args[1:3]} exited ({proc.proc.returncode}) before {what}; "
                                     f"stderr:\n{proc.stderr()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s")


@pytest.mark.slow
def test_stuck_and_vanished_subscribers_cost_a_healthy_one_nothing(tmp_path, bundle):
    """One subscriber never reads (a SUB with a tiny queue, and a raw ZMTP subscriber whose
    queue at the publisher fills within seconds), one TCP client connects and says nothing,
    one leaves mid-run: the healthy subscriber still receives every message, seq without a
    gap, and every alert the monitor stored."""
    video = dark_bright_dark(tmp_path / "v.avi", dark=32, bright=32, after=32, fps=200)
    ep = endpoint()
    events = tmp_path / "events.db"
    config = write_config(tmp_path / "fanout.toml", f"""
[monitor]
id = "fanout"
status_interval = 0.1
[model]
path = "{bundle}"
[publish]
endpoint = "{ep}"
high_water_mark = 20
[log]
events = "{events}"
[alerts]
on = 0.6
off = 0.4
min_snippets = 1
cooldown_s = 0
[[cameras]]
name = "a"
url = "{video}"
loop = true
[[cameras]]
name = "b"
url = "{video}"
loop = true
""")
    healthy = Subscriber(ep)
    stuck = zmq.Context.instance().socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.RCVBUF, 2048)
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.setsockopt_string(zmq.SUBSCRIBE, "")
    stuck.connect(ep)
    leaver = Subscriber(ep)
    proc = monitor(tmp_path, "--config", str(config), *COMMON)
    raw = silent = None
    try:
        healthy.wait_for(lambda ms: ms, "a first message", process=proc)
        raw = RawSubscriber(_port(ep))
        silent = silent_client(_port(ep))
        joined = len(healthy.messages)
        leaver.wait_for(lambda ms: len(ms) >= 5, "messages for the subscriber that leaves", process=proc)
        leaver.close()  # gone mid-run
        # Far more than the raw subscriber's queue and buffers hold (~20 messages and ~40 KB).
        healthy.wait_for(lambda ms: len(ms) >= joined + 400 and len(healthy.of("alert.")) >= 4,
                         "400 messages and 4 alert events after the stuck subscribers joined", process=proc)
        assert proc.terminate() == 0, proc.stderr()
        for _ in range(10):
            healthy.poll(0.2)
    finally:
        proc.kill()
        healthy.close()
        stuck.close(0)
    stuck_seqs = [m["seq"] for m in raw.drain()]
    raw.close()
    silent.close()

    seqs = [m["seq"] for _, m, _ in healthy.messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the healthy subscriber saw a gap in seq"
    stored = [(e["seq"], e["alert_id"], e["event"]) for e in read_store(events)]
    received = [(m["seq"], m["alert_id"], m["event"]) for m in healthy.of("alert.")]
    assert stored and stored[0][0] > seqs[0] and received == stored  # every alert stored was received
    assert healthy.of("status")[-1]["dropped_messages"] == 0   # the socket refused no send
    # The raw subscriber's queue did fill: it holds an early stretch of seq and nothing since.
    assert stuck_seqs and stuck_seqs[-1] < seqs[-1] - 200, (len(stuck_seqs), stuck_seqs[-1:], seqs[-1])
    assert "stopped;" in proc.stderr()
    # The fault table's figures (python -m pytest tests/test_subscribers.py -rP shows them).
    print(f"stuck subscribers: healthy received {len(seqs)} messages, seq {seqs[0]}..{seqs[-1]} without a gap; "
          f"alerts stored {len(stored)}, received {len(received)}; the stuck raw subscriber got {len(stuck_seqs)} "
          f"(seq up to {stuck_seqs[-1]}); dropped_messages {healthy.of('status')[-1]['dropped_messages']}")


@pytest.mark.slow
def test_a_broker_that_is_killed_and_started_again(tmp_path, bundle):
    """The monitor keeps running while its broker is gone, counts what did not fit in its
    queue, and the subscriber behind the broker receives again once it is back."""
    front, back = endpoint(), endpoint()
    broker_args = [str(ROOT / "run_monitor.py"), "broker", "--frontend", front, "--backend", back]
    broker = Process(broker_args, tmp_path, "broker1")
    video = dark_bright_dark(tmp_path / "v.avi", dark=32, bright=32, after=32, fps=50)
    config = write_config(tmp_path / "site.toml", f"""
[monitor]
id = "site"
status_interval = 0.2
[model]
path = "{bundle}"
[publish]
endpoint = "{front}"
connect = true
high_water_mark = 10
[log]
events = "{tmp_path / 'events.db'}"
[[cameras]]
name = "cam"
url = "{video}"
loop = true
""")
    mon = monitor(tmp_path, "--config", str(config), *COMMON)
    sub = Process([str(ROOT / "run_monitor.py"), "subscribe", back, "--json"], tmp_path, "subscribe")
    broker2 = None
    try:
        def site():
            return [m for m in _json_lines(sub) if m.get("monitor") == "site"]
        _wait(lambda: any(m["topic"].startswith("score.") for m in site()), "scores through the broker",
              mon, sub, broker)
        broker.proc.kill()  # SIGKILL: no goodbye to anyone
        broker.proc.wait(30)
        _wait(lambda: "lost the connection" in mon.stderr(), "the monitor noticing", mon, sub)
        before = max(m["seq"] for m in site())
        # More status heartbeats than its queue of 10 holds, published while the broker is away.
        _wait(lambda: mon.stderr().split("lost the connection", 1)[1].count("status:") >= 15,
              "15 heartbeats without the broker", mon, sub)
        broker2 = Process(broker_args, tmp_path, "broker2")

        def after():
            return [m for m in site() if m["seq"] > before]
        _wait(lambda: any(m["topic"] == "status" and m["dropped_messages"] > 0 for m in after())
              and any(m["topic"].startswith("score.") for m in after()),
              "scores and a status counting the loss, after the broker came back", mon, sub, broker2)
        assert mon.proc.poll() is None  # it never stopped
        assert mon.terminate() == 0, mon.stderr()
        assert sub.terminate() == 0, sub.stderr()
        assert broker2.terminate() == 0, broker2.stderr()
    finally:
        for proc in (mon, sub, broker, *([broker2] if broker2 else [])):
            proc.kill()
    err = mon.stderr()
    assert "connected to" in err and "again;" in err and "were lost" in err, err[-2000:]
    notes = [m["note"] for m in _json_lines(sub) if m.get("topic") == "gap"]
    assert any("GAP from monitor site" in n for n in notes), notes  # the subscriber knows what it missed
    seqs = [m["seq"] for m in _json_lines(sub) if m.get("monitor") == "site"]
    assert seqs == sorted(seqs)
    lost = sum(int(n.split(": ")[1].split(" ")[0]) for n in notes if "GAP from monitor site" in n)
    stored = read_store(tmp_path / "events.db")
    received = {(m["seq"], m["event"]) for m in _json_lines(sub) if m.get("topic", "").startswith("alert.")}
    dropped = max(m["dropped_messages"] for m in _json_lines(sub) if m.get("topic") == "status")
    print(f"broker restart: the subscriber missed {lost} messages (seq gaps), the monitor counted {dropped} dropped; "
          f"alerts stored {len(stored)}, received {sum((e['seq'], e['event']) in received for e in stored)}")
