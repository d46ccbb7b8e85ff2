"""The SQLite event store on real files: round trip, WAL, seq numbers that are never reused,
readers that never block the writer, verdicts, retention, the old JSONL log."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from monitor.messages.event_log import read_events, read_jsonl
from monitor.messages.event_store import SEQ_BLOCK, EventStore, StoreError, read_store
from monitor.messages.publisher import Publisher, iso
from tests.live_helpers import ROOT, endpoint


def alert(monitor: str, seq: int, camera: str = "door", event: str = "start", alert_id: str = "door-0",
          ts: float | None = None, start: float | None = None, end: float | None = None, pad: int = 0) -> dict:
    ts = time.time() if ts is None else ts
    start = ts - 1 if start is None else start
    return {"schema": 1, "monitor": monitor, "seq": seq, "camera": camera, "ts": iso(ts), "type": "alert",
            "event": event, "alert_id": alert_id, "score": 0.9, "peak": 0.9, "threshold": 0.5,
            "frames": [10, 40], "time": [iso(start), None if end is None else iso(end)], "duration_s": 0.0,
            "model": {"name": "m", "stage": 2}, "snapshot": None, "pad": "x" * pad}


def stored_alerts(path, monitor: str, n: int) -> list[dict]:
    """A store at `path` holding `n` alert events of `monitor` from the last minute (seq 0..n-1,
    camera door, start and end in turn); -> the messages stored."""
    now = time.time()
    rows = [alert(monitor, i, "door", "start" if i % 2 == 0 else "end", f"door-{i // 2}", ts=now - 60 + i)
            for i in range(n)]
    store = EventStore(path)
    try:
        for row in rows:
            store.record(row)
    finally:
        store.close()
    return rows


def test_alerts_published_through_the_store_read_back_whole_from_a_wal_file(tmp_path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    publisher = Publisher(endpoint(), "box", sequence=store.sequence("box"))
    try:
        publisher.publish("status", {"cameras": []})
        sent = [publisher.publish("alert.door", {"event": kind, "alert_id": "door-0", "time": [iso(time.time()), None],
                                                 "frames": [0, 15]}, camera="door", before_send=store.record)
                for kind in ("start", "end")]
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsynced at every commit
    finally:
        publisher.close()
        store.close()
    assert [m["seq"] for m in sent] == [1, 2] and all(m["stored"] is True for m in sent)
    assert read_store(path) == sent == read_events(path)  # the full message, as published
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    row = db.execute("SELECT monitor, seq, camera, event, alert_id, ts FROM events ORDER BY seq").fetchone()
    assert row == ("box", 1, "door", "start", "door-0", sent[0]["ts"])
    db.close()


def test_a_missing_store_and_a_jsonl_file_are_refused_by_name(tmp_path):
    with pytest.raises(StoreError, match="no event store there"):
        EventStore(tmp_path / "none.db", readonly=True)
    old = tmp_path / "events.jsonl"
    old.write_text(json.dumps(alert("m", 0)) + "\n")
    with pytest.raises(StoreError, match="not an SQLite event store.*--import"):
        EventStore(old)


def test_seq_continues_after_a_clean_stop_and_jumps_past_a_crash(tmp_path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    seq = store.sequence("box")
    taken = [seq.take() for _ in range(5)]
    store.close()
    assert taken == [0, 1, 2, 3, 4]
    store = EventStore(path)
    assert store.sequence("box").first == 5          # a clean stop gives back the rest of the block
    assert store.sequence("other").first == 0        # counters are per monitor id
    store.close()
    # A process that dies without closing: its whole reservation stays taken.
    script = ("import os, sys; from monitor.messages.event_store import EventStore\n"
              f"s = EventStore({str(path)!r}).sequence('box')\n"
              "print([s.take() for _ in range(3)], flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    crashed = json.loads(out.stdout)
    assert crashed == [5, 6, 7]  # the second open above used none, so it gave them all back
    store = EventStore(path)
    after = store.sequence("box").first
    store.close()
    assert after > max(crashed) and after == 5 + SEQ_BLOCK


def test_two_writers_with_one_monitor_id_never_share_a_seq(tmp_path):
    a, b = EventStore(tmp_path / "events.db"), EventStore(tmp_path / "events.db")
    try:
        sa, sb = a.sequence("box"), b.sequence("box")
        got_a = [sa.take() for _ in range(SEQ_BLOCK)]   # runs through a renewal
        got_b = [sb.take() for _ in range(100)]
    finally:
        a.close()
        b.close()
    assert not set(got_a) & set(got_b)
    assert got_a == sorted(got_a) and len(set(got_a)) == len(got_a)


def test_a_reader_in_a_transaction_does_not_block_the_writer(tmp_path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    store.record(alert("box", 0))
    reader = sqlite3.connect(path, isolation_level=None, timeout=0.5)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1   # holds its snapshot
        assert store.record(alert("box", 1)) and store.fault is None            # the writer goes on
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1   # and the reader keeps its view
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    finally:
        reader.close()
        store.close()


def test_marks_are_recorded_and_read_back_as_time_ranges(tmp_path):
    store = EventStore(tmp_path / "events.db")
    t0 = time.time() - 100
    try:
        store.record(alert("box", 0, alert_id="door-0", ts=t0, start=t0 - 2))
        store.record(alert("box", 1, event="end", alert_id="door-0", ts=t0 + 5, start=t0 - 2, end=t0 + 4))
        store.record(alert("box", 2, alert_id="door-1", ts=t0 + 20, start=t0 + 19))
        store.record(alert("box", 3, camera="yard", alert_id="yard-2", ts=t0 + 30) | {"position_s": [12.5, None]})
        store.record(alert("other", 0, alert_id="door-1", ts=t0 + 40))  # another monitor, the same id
        verdict = store.mark("door-0", False, "a shadow")
        assert (verdict.camera, verdict.verdict, verdict.note) == ("door", False, "a shadow")
        assert verdict.start == pytest.approx(t0 - 2, abs=1e-3) and verdict.end == pytest.approx(t0 + 4, abs=1e-3)
        assert verdict.frames == (10, 40) and verdict.position is None
        with pytest.raises(StoreError, match="several monitors"):
            store.mark("door-1", False)
        store.mark("door-1", True, monitor="box")
        with pytest.raises(StoreError, match="no alert 'nope'"):
            store.mark("nope", False)
        assert store.mark("yard-2", False).position == (12.5, None)   # a file source: seconds into the file
        ranges = store.alerts_marked_false("door")
        assert ranges == [(pytest.approx(t0 - 2, abs=1e-3), pytest.approx(t0 + 4, abs=1e-3))]
        assert [v.alert_id for v in store.verdicts()] == ["door-0", "door-1", "yard-2"]
        store.mark("door-0", True, "looked again")        # a later mark replaces the first
        assert store.alerts_marked_false("door") == []
        listed = {(e.alert_id, e.monitor): (e.verdict, e.note) for e in store.events()}
        assert listed[("door-0", "box")] == (True, "looked again") and listed[("door-1", "other")] == (None, "")
    finally:
        store.close()


def test_retention_by_age_deletes_only_the_old_events(tmp_path):
    now = time.time()
    store = EventStore(tmp_path / "events.db", retention_days=1)
    try:
        seq = store.sequence("box")
        kept = []
        for i, age_days in enumerate([5, 3, 2, 0.5, 0.1]):
            m = alert("box", seq.take(), alert_id=f"door-{i}", ts=now - age_days * 86400)
            store.record(m)
            if age_days < 1:
                kept.append(m)
        store.mark("door-0", False)
        assert store.apply_retention(now) == 3
        assert store.messages() == kept
        assert store.counter_value("box") == seq.first + SEQ_BLOCK   # the seq state is never deleted
        assert [v.alert_id for v in store.verdicts()] == ["door-0"]  # nor the operator's verdicts
    finally:
        store.close()


def test_retention_by_size_keeps_the_newest_events_intact(tmp_path):
    path = tmp_path / "events.db"
    store = EventStore(path, max_mb=0.5)
    now = time.time() - 3000
    try:
        messages = [alert("box", i, alert_id=f"door-{i}", ts=now + i, pad=2000) for i in range(1500)]
        store.import_messages(messages)                      # about 3.5 MB of events
        assert store.count() == 1500
        deleted = store.apply_retention()
        kept = store.messages()
        assert deleted > 1000 and len(kept) == 1500 - deleted
        assert kept == messages[deleted:]                    # the newest, whole and in order
        used = store._used_bytes(store._db)
        assert used <= 0.5 * 1024 * 1024
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert path.stat().st_size <= 0.6 * 1024 * 1024     # the freed pages went back to the disk
        assert store.counter_value("box") == 1500            # the import moved the seq past what it brought
    finally:
        store.close()


def test_an_old_jsonl_log_is_read_with_its_truncated_line_and_imported_once(tmp_path):
    old = tmp_path / "events.jsonl"
    records = [alert("box-123", i, alert_id=f"door-{i // 2}", event=("start", "end")[i % 2]) for i in range(4)]
    old.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"schema": 1, "monitor": "box-123", "se')
    got, problems = read_jsonl(old)
    assert got == records and len(problems) == 1 and "line 5" in problems[0] and str(old) in problems[0]
    store = EventStore(tmp_path / "events.db")
    try:
        assert store.import_messages(got) == (4, 0)
        assert store.import_messages(got) == (0, 4)          # idempotent on (monitor, seq)
        assert store.messages() == records
        assert store.sequence("box-123").first == 4          # a monitor of that id goes on after them
    finally:
        store.close()


def test_retention_settings_are_checked_by_name():
    from monitor import config
    assert config.from_dict({"log": {"retention_days": 30, "max_mb": 500}}).log.max_mb == 500.0
    for key, value in (("retention_days", 0), ("max_mb", -1), ("max_mb", "big")):
        with pytest.raises(config.ConfigError, match=f"'log.{key}'"):
            config.from_dict({"log": {key: value}}, source="site.toml")
