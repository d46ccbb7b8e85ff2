"""The event store's disk fills up under a running monitor, for real: a 2 MiB tmpfs holds the
store, a file fills it to ENOSPC, then goes, then fills it again up to the shutdown. Needs root
(mount); skipped where a tmpfs cannot be mounted."""
from __future__ import annotations

import errno
import os
import sqlite3
import subprocess

import pytest

from monitor.dashboard.render import render_dashboard
from monitor.dashboard.state import DashboardState
from monitor.messages.event_store import read_store
from tests.factories import BRIGHT, DARK, cached_bundle, write_video
from tests.live_helpers import Subscriber, endpoint, monitor, write_config


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(path) -> None:
    """Write zeros into `path` until the file system says ENOSPC, in smaller and smaller pieces."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def faults(m: dict) -> list[str]:
    return [f["kind"] for f in m.get("faults", [])]


@pytest.mark.slow
def test_a_full_disk_under_the_store_is_loud_loses_nothing_stored_and_exits_cleanly(tmp_path, small_disk):
    bundle = cached_bundle()
    video = write_video(tmp_path / "blink.avi", [(32, DARK), (32, BRIGHT)], fps=50)  # looped: an alert every 1.3 s
    ep = endpoint()
    config = write_config(tmp_path / "full.toml", f"""
[monitor]
id = "full"
[publish]
endpoint = "{ep}"
[alerts]
on = 0.6
off = 0.4
cooldown_s = 0.0
[[cameras]]
name = "door"
url = "{video}"
loop = true
""")
    db = small_disk / "events.db"
    filler = small_disk / "filler"
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--config", str(config), "--model", str(bundle), "--events", str(db),
                   "--no-dashboard", "--status-interval", "0.5")

    def alerts(stored=None, after=0):
        return [m for t, m, _ in sub.messages[after:] if t.startswith("alert.")
                and (stored is None or m["stored"] is stored)]

    def index_of(predicate, after=0):
        return next((i for i, (t, m, _) in enumerate(sub.messages) if i >= after and predicate(t, m)), None)

    try:
        sub.wait_for(lambda ms: len(alerts(True)) >= 2, "two stored alerts", process=proc)
        fill(filler)
        full_at = len(sub.messages)
        # Loud, listed as a fault, and alerting goes on: alerts published, marked not stored.
        sub.wait_for(lambda ms: len(alerts(False, full_at)) >= 2 and index_of(
            lambda t, m: t == "status" and "event_log" in faults(m), full_at) is not None,
            "alerts marked stored=false and an event_log fault", process=proc)
        os.remove(filler)
        freed_at = len(sub.messages)
        sub.wait_for(lambda ms: index_of(lambda t, m: t == "status" and not faults(m), freed_at) is not None
                     and alerts(True, index_of(lambda t, m: t == "status" and not faults(m), freed_at)),
                     "the fault cleared and an alert stored again", process=proc)
        # Full again, and stopped while full.
        fill(filler)
        again_at = len(sub.messages)
        sub.wait_for(lambda ms: alerts(False, again_at), "an alert not stored in the second fault", process=proc)
        code = proc.terminate()
        sub.drain()
    finally:
        proc.kill()
        sub.close()
        if filler.exists():
            os.remove(filler)

    err = proc.stderr()
    assert code == 0 and "Traceback" not in err, err[-3000:]
    # Loud once per fault, not once per failed write (the first fault failed at least two).
    assert err.count("EVENT STORE FAULT") == 2, err
    assert "database or disk is full" in err and "can be written again" in err
    assert "alert event not stored:" in err                     # what the second fault kept from the store
    fault = next(m for t, m, _ in sub.messages if t == "status" and faults(m))
    assert str(db) in fault["faults"][0]["message"] and "full" in fault["faults"][0]["message"]
    # Scoring went on during the fault.
    fault_start = index_of(lambda t, m: t == "status" and faults(m))
    fault_end = index_of(lambda t, m: t == "status" and not faults(m), fault_start)
    assert any(t.startswith("score.") for t, _, _ in sub.messages[fault_start:fault_end])

    # The file is whole, and holds every alert published until the second fault, each exactly
    # as published (those of the first fault written once space came back, stored=false).
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    stored = read_store(db)
    assert len({(m["monitor"], m["seq"]) for m in stored}) == len(stored)
    by_seq = {m["seq"]: m for m in stored}
    published = alerts(None, 0)[:len(alerts(None, 0)) - len(alerts(None, again_at))]
    assert published and all(by_seq.get(m["seq"]) == m for m in published)
    assert any(m["stored"] is False for m in published) and any(m["stored"] is True for m in published)

    # The dashboard, fed these very messages, shows the fault, then not.
    state = DashboardState()
    for t, m, _ in sub.messages[:fault_start + 1]:
        state.feed(t, m)
    screen = render_dashboard(state.snapshot(), 160).plain
    assert "FAULT event_log" in screen and "full" in screen
    for t, m, _ in sub.messages[fault_start + 1:fault_end + 1]:
        state.feed(t, m)
    assert "FAULT" not in render_dashboard(state.snapshot(), 160).plain


@pytest.mark.slow
def test_a_store_that_cannot_be_written_at_start_stops_the_monitor_in_one_line(tmp_path, small_disk):
    """No seq could be promised unique then: refused, exit code 2, no traceback."""
    fill(small_disk / "filler")
    proc = monitor(tmp_path, "--model", str(cached_bundle()), "--source", "synthetic://", "--no-dashboard",
                   "--events", str(small_disk / "events.db"), "--publish", endpoint())
    assert proc.wait() == 2
    err = proc.stderr().strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(small_disk / "events.db") in err and "full" in err


def test_the_dashboard_shows_a_monitor_fault_until_a_status_without_it():
    state = DashboardState()
    status = {"schema": 1, "monitor": "box", "camera": None, "ts": "2026-11-24T20:00:00.000Z", "type": "status",
              "uptime_s": 5.0, "model": {"name": "m", "stage": 2}, "dropped_messages": 0, "alerts_today": 0,
              "cameras": []}
    state.feed("status", dict(status, seq=0, faults=[]))
    assert "FAULT" not in render_dashboard(state.snapshot(), 120).plain
    state.feed("status", dict(status, seq=1, faults=[{"kind": "event_log", "message": "cannot write /x/events.db: "
                                                       "database or disk is full"}]))
    screen = render_dashboard(state.snapshot(), 120).plain
    assert "FAULT event_log: cannot write /x/events.db: database or disk is full" in screen
    state.feed("status", dict(status, seq=2, faults=[]))
    assert "FAULT" not in render_dashboard(state.snapshot(), 120).plain
