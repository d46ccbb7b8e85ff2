"""The event store's commands as an operator runs them: `events`, `mark`, `replay` (to a real
SUB socket), the old JSONL log exported and imported, and seq continuing across two real runs
of the monitor with the same --monitor-id."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from monitor.messages.event_store import EventStore, read_store
from tests.factories import DARK, BRIGHT, cached_bundle, write_video
from tests.live_helpers import ROOT, Process, Subscriber, endpoint, monitor, write_config
from tests.test_event_store import alert


def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def store_file(tmp_path):
    """Two cameras' alerts: door-0 three hours ago, door-1 and yard-2 in the last minutes."""
    path = tmp_path / "events.db"
    now = time.time()
    store = EventStore(path)
    rows = [alert("box", 0, "door", "start", "door-0", ts=now - 3 * 3600),
            alert("box", 1, "door", "end", "door-0", ts=now - 3 * 3600 + 5, end=now - 3 * 3600 + 4),
            alert("box", 7, "door", "start", "door-1", ts=now - 300, start=now - 301),
            alert("box", 8, "yard", "start", "yard-2", ts=now - 200),
            alert("box", 9, "door", "end", "door-1", ts=now - 100, start=now - 301, end=now - 101)]
    for row in rows:
        store.record(row)
    store.close()
    return path, rows


def test_events_lists_and_filters_the_store(store_file):
    path, rows = store_file
    out = cli("events", "--db", str(path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and "5 event(s)" in out.stderr
    assert "START" in lines[0] and "door-0" in lines[0] and "[box seq 0]" in lines[0]
    out = cli("events", "--db", str(path), "--since", "1h", "--camera", "door", "--json")
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert got == [dict(rows[2], stored=True), dict(rows[4], stored=True)]   # the messages as stored
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 250))  # local time, ISO 8601
    out = cli("events", "--db", str(path), "--since", since, "--json")
    assert [json.loads(line)["alert_id"] for line in out.stdout.splitlines()] == ["yard-2", "door-1"]
    out = cli("events", "--db", str(path), "--limit", "1", "--json")
    assert [json.loads(line)["seq"] for line in out.stdout.splitlines()] == [9]


def test_events_refuses_bad_input_in_one_line(store_file, tmp_path):
    path, _ = store_file
    for args, words in ((("--db", str(path), "--since", "yesterday-ish"), ("--since", "not a time")),
                        (("--db", str(tmp_path / "missing.db"),), ("missing.db", "no event store"))):
        out = cli("events", *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and all(w in out.stderr for w in words), out.stderr


def test_mark_records_the_verdict_and_events_shows_it(store_file):
    path, _ = store_file
    out = cli("mark", "door-1", "false", "--note", "a cat", "--db", str(path))
    assert out.returncode == 0, out.stderr
    assert "door-1" in out.stdout and "marked false: a cat" in out.stdout
    listed = {(m["alert_id"], m["event"]): m for m in map(json.loads, cli("events", "--db", str(path), "--json")
                                                          .stdout.splitlines())}
    assert listed[("door-1", "start")]["verdict"] is False and listed[("door-1", "end")]["note"] == "a cat"
    assert "verdict" not in listed[("yard-2", "start")]
    assert "marked FALSE: a cat" in cli("events", "--db", str(path), "--camera", "door", "--since", "1h").stdout
    store = EventStore(path, readonly=True)
    try:
        (start, end), = store.alerts_marked_false("door")
        assert end is not None and start < end and store.alerts_marked_false("yard") == []
    finally:
        store.close()
    out = cli("mark", "door-99", "false", "--db", str(path))
    assert out.returncode == 2 and "no alert 'door-99'" in out.stderr and "Traceback" not in out.stderr


def test_replay_reaches_a_subscriber_marked_replayed(store_file, tmp_path):
    path, rows = store_file
    ep = endpoint()
    replay = Process([str(ROOT / "run_monitor.py"), "replay", "--db", str(path), "--since", "1h",
                      "--publish", ep, "--wait", "60"], tmp_path, "replay")
    sub = Subscriber(ep, topics=("alert.",))
    try:
        sub.wait_for(lambda ms: len(ms) >= 3, "three replayed alerts", process=replay)
        assert replay.wait() == 0, replay.stderr()
        sub.drain()
    finally:
        replay.kill()
        sub.close()
    got = sub.of("alert.")
    assert len(got) == 3 and [t for t, _, _ in sub.messages] == ["alert.door", "alert.yard", "alert.door"]
    for i, (message, original) in enumerate(zip(got, rows[2:])):
        assert message["replayed"] is True and message["replay_seq"] == i and message["replay_ts"].endswith("Z")
        assert {k: v for k, v in message.items() if not k.startswith("replay")} == dict(original, stored=True)
    assert "replayed 3 alert event(s)" in replay.stderr()


def test_replay_without_a_subscriber_says_so(store_file):
    path, _ = store_file
    out = cli("replay", "--db", str(path), "--since", "1h", "--publish", endpoint(), "--wait", "1")
    assert out.returncode == 1 and "no subscriber" in out.stderr and "Traceback" not in out.stderr


def test_an_old_jsonl_log_is_exported_and_imported_by_the_command(tmp_path):
    old = tmp_path / "events.jsonl"
    records = [alert("box-4242", i, alert_id=f"door-{i // 2}", event=("start", "end")[i % 2]) for i in range(4)]
    old.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"truncated": ')
    out = cli("events", "--jsonl", str(old), "--json")
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines()] == records
    assert "line 5" in out.stderr and "truncated" in out.stderr
    db = tmp_path / "events.db"
    first = cli("events", "--import", str(old), "--db", str(db))
    again = cli("events", "--import", str(old), "--db", str(db))
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "imported 4 event(s)" in first.stdout and "imported 0 event(s)" in again.stdout
    assert "(4 already there)" in again.stdout
    assert read_store(db) == records


@pytest.mark.slow
def test_seq_and_alert_ids_continue_across_two_runs_of_one_monitor(tmp_path):
    bundle = cached_bundle()
    video = write_video(tmp_path / "door.avi", [(32, DARK), (32, BRIGHT), (32, DARK)], fps=50)
    db = tmp_path / "events.db"
    runs = []
    for run in (1, 2):
        ep = endpoint()
        config = write_config(tmp_path / f"run{run}.toml", f"""
[monitor]
id = "lobby"
[publish]
endpoint = "{ep}"
[engine]
max_pending = 64   # paced past real time: a stall of a loaded machine must not drop a snippet asserted on
[[cameras]]
name = "door"
url = "{video}"
pace = true
""")
        sub = Subscriber(ep)
        proc = monitor(tmp_path, "--config", str(config), "--model", str(bundle), "--events", str(db),
                       "--threshold", "0.6", "--no-dashboard", "--status-interval", "0.5", name=f"run{run}")
        try:
            sub.wait_for(lambda ms: any(t.startswith("alert.") and m["event"] == "end" for t, m, _ in ms),
                         f"run {run}'s alert end", process=proc)
            assert proc.wait() == 0, proc.stderr()   # the file ends, so does the run
            sub.drain()
        finally:
            proc.kill()
            sub.close()
        runs.append([m for _, m, _ in sub.messages])
    first, second = runs
    assert all(m["monitor"] == "lobby" for m in first + second)
    assert max(m["seq"] for m in first) < min(m["seq"] for m in second)   # continued, never restarted
    stored = read_store(db)
    assert len({(m["monitor"], m["seq"]) for m in stored}) == len(stored) == 4
    ids = [m["alert_id"] for m in stored if m["event"] == "start"]
    assert ids == ["door-0", "door-1"]                                   # short, typeable, never reused
    assert [m for m in first + second if m["type"] == "alert"] == stored


def test_the_monitor_refuses_an_old_jsonl_log_as_its_store(tmp_path):
    old = tmp_path / "events.jsonl"
    old.write_text(json.dumps(alert("box", 0)) + "\n")
    before = old.read_bytes()
    proc = monitor(tmp_path, "--model", str(cached_bundle()), "--source", "synthetic://", "--no-dashboard",
                   "--events", str(old), "--publish", endpoint())
    assert proc.wait() == 2
    err = proc.stderr().strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(old) in err and "--import" in err
    assert old.read_bytes() == before  # untouched
