"""The durable alert event store: one SQLite file (standard library sqlite3, WAL journal,
synchronous=FULL), one row per alert event holding the full JSON message as published.

- An alert is written (and fsynced) before it is published: the publisher's `before_send`
  hook calls `record()`, which stamps the message `"stored": true` or, when the write fails
  (a full disk), `"stored": false` so that subscribers are told. Failed events are held in
  memory (bounded) and written as soon as the store can be written again.
- `seq` numbers and alert numbers are handed out from blocks reserved in the store
  (`counters` table, per monitor id), so that a (monitor, seq) pair is never used twice,
  also across restarts, also for score and status messages sent after the last alert.
- Readers (the `events`, `replay` and `mark` commands, other processes) never block the
  writer: that is what the WAL journal gives.
- A write that fails leaves what is stored intact: each write is one transaction, which
  SQLite rolls back whole.

Tables: events (monitor, seq, camera, event, alert_id, ts, ts_epoch, message), counters
(monitor, name, next, updated_at) and verdicts (the operator's `mark`s).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("monitor.messages.event_store")

SCHEMA_VERSION = 2         # 2: verdicts.position
SQLITE_MAGIC = b"SQLite format 3\x00"
SEQ_BLOCK = 10_000        # seq numbers reserved per write; a renewal is due when half are used
ALERT_BLOCK = 1_000       # alert numbers reserved per write
HELD_LIMIT = 10_000       # alert events kept in memory while the store cannot be written
PROBE_S = 5.0             # while faulted, how often the maintenance thread tries to write
REMIND_S = 60.0           # while faulted, how often the error is repeated in the log
RETENTION_S = 600.0       # how often retention runs (it also runs at start)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY,
    monitor   TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    camera    TEXT,
    event     TEXT,
    alert_id  TEXT,
    ts        TEXT NOT NULL,
    ts_epoch  REAL NOT NULL,
    message   TEXT NOT NULL,
    UNIQUE (monitor, seq)
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts_epoch);
CREATE INDEX IF NOT EXISTS events_by_alert ON events (alert_id);
CREATE TABLE IF NOT EXISTS counters (
    monitor    TEXT NOT NULL,
    name       TEXT NOT NULL,
    next       INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (monitor, name)
);
CREATE TABLE IF NOT EXISTS verdicts (
    monitor     TEXT NOT NULL,
    alert_id    TEXT NOT NULL,
    camera      TEXT,
    verdict     INTEGER NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    marked_at   REAL NOT NULL,
    start_epoch REAL,
    end_epoch   REAL,
    frames      TEXT,
    position    TEXT,
    PRIMARY KEY (monitor, alert_id)
);
"""


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message names the file and the reason."""


def epoch(iso_time: str | None) -> float | None:
    """ISO 8601 as the contract writes it ("...Z") -> epoch seconds; None if absent or bad."""
    if not isinstance(iso_time, str) or not iso_time:
        return None
    try:
        when = _dt.datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


def is_store(path: str | Path) -> bool:
    """True when the file is an SQLite database (as opposed to an old JSONL event log)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@dataclass(frozen=True)
class StoredEvent:
    """One row of the store, with the operator's verdict on its alert when there is one."""
    monitor: str
    seq: int
    camera: str | None
    event: str | None
    alert_id: str | None
    ts: str
    ts_epoch: float
    message: dict
    verdict: bool | None = None
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    """The operator's verdict on one alert (`run_monitor.py mark`): `verdict` False means a
    false alarm. `start`/`end` are epoch seconds of the alert's first and last frame (end None
    while the alert is still open or its end was never stored); `frames` its frame range;
    `position` its (start, end) in seconds into the file for a file source, else None."""
    monitor: str
    alert_id: str
    camera: str | None
    verdict: bool
    note: str
    marked_at: float
    start: float | None
    end: float | None
    frames: tuple[int, int] | None
    position: tuple[float, float | None] | None = None


class Counter:
    """Numbers (seq, alert numbers) for one monitor, handed out from blocks reserved in the
    store, so that none is used twice even across restarts. A block is renewed when half of
    it is used; if the store cannot be written then, counting goes on in memory and the
    reservation is caught up with as soon as the store can be written again."""

    def __init__(self, store: "EventStore", monitor: str, name: str, block: int):
        self.store, self.monitor, self.name, self.block = store, monitor, name, block
        self._lock = threading.Lock()
        self.first = store._reserve(monitor, name, 0, block)  # raises StoreError if it cannot write
        self._end = self.first + block          # our reservation is [.., _end)
        self._next_block: tuple[int, int] | None = None  # a renewal that was not contiguous
        self._last: int | None = None            # the last number handed out
        self._retry_at = 0.0

    def take(self, at_least: int = 0) -> int:
        """The next number to use: at least `at_least` (the caller's own idea of the next one)."""
        with self._lock:
            n = max(at_least, self.first if self._last is None else self._last + 1)
            if n >= self._end - self.block // 2 and self._next_block is None and time.monotonic() >= self._retry_at:
                self._renew(n)
            if n >= self._end and self._next_block is not None:  # ours is used up: on to the next block
                start, end = self._next_block
                n, self._end, self._next_block = max(n, start), end, None
            self._last = n
            return n

    def _renew(self, n: int) -> None:
        try:
            start = self.store._reserve(self.monitor, self.name, max(n, self._end), self.block)
        except StoreError as exc:
            self._retry_at = time.monotonic() + 1.0  # the store is faulted: keep counting in memory
            self.store._failed(exc.__cause__ or exc)
            return
        if start == self._end:
            self._end = start + self.block        # contiguous: ours grows
        else:
            self._next_block = (start, start + self.block)  # numbers were taken in between (or we ran past)

    # catch_up and release run inside the store's write lock, while take() may hold this
    # counter's lock and wait for the store's: they read the counter without its lock (plain
    # ints; a number taken meanwhile is covered by the next renewal), so no lock order inverts.
    def _state(self) -> tuple[int, int]:
        """(the next number not handed out, the end of what we reserved)."""
        last, end, next_block = self._last, self._end, self._next_block
        return (self.first if last is None else last + 1), (end if next_block is None else next_block[1])

    def catch_up(self, db: sqlite3.Connection) -> None:
        """Inside a write: make the stored reservation cover every number handed out (it may
        have run past it while the store could not be written), touching the row either way."""
        used, ours = self._state()
        row = db.execute("SELECT next FROM counters WHERE monitor = ? AND name = ?",
                         (self.monitor, self.name)).fetchone()
        _set_counter(db, self.monitor, self.name, max(row[0] if row else 0, used, ours))

    def release(self, db: sqlite3.Connection) -> None:
        """At a clean stop: give back the unused rest of our block, so that the next start
        continues without a gap (only if no one reserved after us)."""
        used, ours = self._state()
        row = db.execute("SELECT next FROM counters WHERE monitor = ? AND name = ?",
                         (self.monitor, self.name)).fetchone()
        stored = row[0] if row else 0
        _set_counter(db, self.monitor, self.name, used if stored == ours else max(stored, used))


def _set_counter(db: sqlite3.Connection, monitor: str, name: str, value: int) -> None:
    db.execute("INSERT INTO counters (monitor, name, next, updated_at) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (monitor, name) DO UPDATE SET next = excluded.next, updated_at = excluded.updated_at",
               (monitor, name, int(value), time.time()))


class EventStore:
    """The event store of one SQLite file. Thread-safe: one connection, one lock.

    `retention_days` / `max_mb`: keep only the events of the last N days / at most about N MiB
    of events (oldest deleted first; counters and verdicts are never deleted), applied by
    `apply_retention()` at start and every RETENTION_S by the maintenance thread."""

    def __init__(self, path: str | Path, *, readonly: bool = False, retention_days: float | None = None,
                 max_mb: float | None = None, held_limit: int = HELD_LIMIT):
        self.path = Path(path)
        self.readonly = readonly
        self.retention_days = retention_days
        self.max_mb = max_mb
        self.written = 0            # alert events written by this process
        self.not_stored = 0         # alert events that could not be written when published
        self.fault: str | None = None
        self.fault_since: float | None = None
        self._held: deque[dict] = deque(maxlen=held_limit)
        self.held_dropped = 0       # held events pushed out of memory by newer ones (counted, logged)
        self._lock = threading.RLock()
        self._counters: list[Counter] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_loud = -math.inf
        self._logged_fault = False   # the log's last word on the store is "faulted"
        self._closed = False
        self._db = self._connect()

    # ------------------------------------------------------------------ opening
    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no event store there (the monitor's --events file; default events.db)")
            uri = f"file:{self.path.resolve().as_posix()}?mode=ro"
            target, kwargs = uri, {"uri": True}
        else:
            if self.path.exists() and self.path.is_dir():
                raise StoreError(f"{self.path}: is a directory, not an event store file")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create its directory ({_reason(exc)})") from exc
            target, kwargs = str(self.path), {}
        if self.path.is_file() and self.path.stat().st_size and not is_store(self.path):
            raise StoreError(f"{self.path}: is not an SQLite event store (an old JSONL event log? "
                             f"copy it into a store with: run_monitor.py events --import {self.path} --db events.db)")
        try:
            db = sqlite3.connect(target, timeout=10.0, isolation_level=None, check_same_thread=False, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open it ({_reason(exc)})") from exc
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            if not self.readonly:
                # auto_vacuum takes effect only on a new file, before its first table.
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: SQLite refused the WAL journal (got {mode!r})")
                db.execute("PRAGMA synchronous = FULL")
                db.execute("PRAGMA journal_size_limit = 16777216")  # a burst's WAL does not stay on disk
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: written by a newer monitor (store schema {version}, "
                                     f"this one reads {SCHEMA_VERSION})")
                db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(verdicts)")}
                if "position" not in columns:  # a store of schema 1
                    db.execute("ALTER TABLE verdicts ADD COLUMN position TEXT")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            else:
                db.execute("SELECT count(*) FROM events").fetchone()
            self._position_column = "position" in {row[1] for row in db.execute("PRAGMA table_info(verdicts)")}
        except StoreError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"{self.path}: cannot use it as an event store ({_reason(exc)})") from exc
        return db

    @contextmanager
    def _write(self):
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); rolled back whole on any error."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self.path}: event store already closed")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    def _reserve(self, monitor: str, name: str, at_least: int, block: int) -> int:
        """Reserve [start, start + block) for a monitor's counter; returns start."""
        try:
            with self._write() as db:
                row = db.execute("SELECT next FROM counters WHERE monitor = ? AND name = ?", (monitor, name)).fetchone()
                start = max(row[0] if row else 0, at_least)
                _set_counter(db, monitor, name, start + block)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot reserve {name} numbers ({_reason(exc)})") from exc
        return start

    # ------------------------------------------------------------------ writing
    def sequence(self, monitor: str) -> Counter:
        """The `seq` counter of a monitor (give it to the Publisher). Raises StoreError when
        the store cannot be written (nothing could guarantee that no seq is reused)."""
        counter = Counter(self, monitor, "seq", SEQ_BLOCK)
        self._counters.append(counter)
        return counter

    def alert_numbers(self, monitor: str) -> Counter:
        """A counter for short alert ids (`<camera>-<n>`), unique per monitor across restarts."""
        counter = Counter(self, monitor, "alert", ALERT_BLOCK)
        self._counters.append(counter)
        return counter

    def record(self, message: dict) -> bool:
        """Write one alert event (the stamped message) before it is published. Sets
        `message["stored"]` to what happened; a failed write is held in memory and written
        when the store can be written again. Never raises."""
        message["stored"] = True
        try:
            with self._write() as db:
                self._write_held(db)
                self._insert(db, message)
        except (sqlite3.Error, OSError, StoreError) as exc:
            message["stored"] = False
            self.not_stored += 1
            self._hold(dict(message))
            self._failed(exc)
            return False
        self.written += 1
        self._recovered()
        return True

    @staticmethod
    def _insert(db: sqlite3.Connection, message: dict, ignore: bool = False) -> bool:
        ts = message.get("ts")
        when = epoch(ts)
        if when is None:
            raise ValueError(f"message has no valid 'ts' ({ts!r})")
        cur = db.execute(
            f"INSERT {'OR IGNORE ' if ignore else ''}INTO events (monitor, seq, camera, event, alert_id, ts, ts_epoch, "
            f"message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (str(message.get("monitor") or ""), int(message["seq"]), message.get("camera"), message.get("event"),
             message.get("alert_id"), ts, when, json.dumps(message, separators=(",", ":"), ensure_ascii=False)))
        return cur.rowcount > 0

    def _hold(self, message: dict) -> None:
        if len(self._held) == self._held.maxlen:
            self.held_dropped += 1
            log.error("event store %s: more than %d alert events waiting to be written; the oldest is dropped: %s",
                      self.path, self._held.maxlen, json.dumps(self._held[0], separators=(",", ":")))
        self._held.append(message)

    def _write_held(self, db: sqlite3.Connection) -> None:
        """Inside a write: the events held since a failure, oldest first, then the counters."""
        if not self._held and self.fault is None:
            return
        for message in self._held:
            self._insert(db, message, ignore=True)
        for counter in self._counters:
            counter.catch_up(db)

    @property
    def held(self) -> int:
        return len(self._held)

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.fault is None:
            self.fault_since = time.time()
        self.fault = f"cannot write {self.path}: {_reason(exc)}"
        # Loud, never a flood: one line when a fault begins, then a reminder every REMIND_S,
        # however often writes fail in between.
        if not self._logged_fault:
            self._logged_fault, self._last_loud = True, now
            log.error("EVENT STORE FAULT: %s. Scoring and alerting go on; alerts are published marked "
                      "stored=false and held in memory until the store can be written again", self.fault)
        elif now - self._last_loud >= REMIND_S:
            self._last_loud = now
            log.error("event store still faulted for %.0f s: %s; %d alert event(s) held in memory",
                      time.time() - (self.fault_since or time.time()), self.fault, len(self._held))

    def _recovered(self) -> None:
        if self.fault is None:
            return
        held = len(self._held)
        self._held.clear()
        self.written += held
        log.warning("event store %s can be written again after %.0f s; %d held alert event(s) written",
                    self.path, time.time() - (self.fault_since or time.time()), held)
        self.fault = self.fault_since = None
        self._logged_fault = False

    def probe(self) -> bool:
        """While faulted: try a real write (held events and counters); True when it worked."""
        try:
            with self._write() as db:
                self._write_held(db)
        except (sqlite3.Error, OSError, StoreError) as exc:
            self._failed(exc)
            return False
        self._recovered()
        return True

    # ------------------------------------------------------------------ retention
    def apply_retention(self, now: float | None = None) -> int:
        """Delete the oldest events beyond `retention_days` and `max_mb`; returns how many.
        Each batch is its own transaction, so what is kept is never at risk, and the writer
        waits at most one batch."""
        if self.readonly or (self.retention_days is None and self.max_mb is None):
            return 0
        now = time.time() if now is None else now
        deleted = 0
        try:
            if self.retention_days is not None:
                cutoff = now - self.retention_days * 86400.0
                while True:
                    with self._write() as db:
                        n = db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts_epoch < ? "
                                       "ORDER BY ts_epoch, id LIMIT 1000)", (cutoff,)).rowcount
                    deleted += n
                    if n < 1000:
                        break
            if self.max_mb is not None:
                limit = self.max_mb * 1024 * 1024
                while True:
                    with self._write() as db:
                        used = self._used_bytes(db)
                        rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
                        if used <= limit or rows == 0:
                            break
                        drop = min(1000, max(1, math.ceil(rows * (used - limit) / used)))
                        deleted += db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events "
                                              "ORDER BY ts_epoch, id LIMIT ?)", (drop,)).rowcount
            if deleted:
                self._vacuum()
                log.info("event store %s: retention deleted %d old event(s)", self.path, deleted)
        except (sqlite3.Error, OSError, StoreError) as exc:
            log.warning("event store %s: retention not applied: %s", self.path, _reason(exc))
        return deleted

    def _vacuum(self) -> None:
        """Give the pages freed by deletions back to the disk. Python's sqlite3 steps the
        pragma once, which frees one page, so it is repeated, in batches of one transaction."""
        before = None
        while True:
            with self._write() as db:
                if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # a file made without it
                    return
                free = db.execute("PRAGMA freelist_count").fetchone()[0]
                for _ in range(min(free, 2000)):
                    db.execute("PRAGMA incremental_vacuum(1)")
            if free <= 2000 or (before is not None and free >= before):
                return
            before = free

    @staticmethod
    def _used_bytes(db: sqlite3.Connection) -> int:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * db.execute("PRAGMA page_size").fetchone()[0]

    # ------------------------------------------------------------------ maintenance thread
    def start_maintenance(self) -> "EventStore":
        """A thread that, while faulted, tries to write every PROBE_S and repeats the error
        every REMIND_S, and applies retention every RETENTION_S."""
        self._thread = threading.Thread(target=self._maintain, name="event-store", daemon=True)
        self._thread.start()
        return self

    def _maintain(self) -> None:
        next_retention = time.monotonic() + RETENTION_S
        next_probe = time.monotonic() + PROBE_S
        while not self._stop.wait(0.5):
            now = time.monotonic()
            try:
                if self.fault is not None and now >= next_probe:
                    next_probe = now + PROBE_S
                    self.probe()
                if now >= next_retention:
                    next_retention = now + RETENTION_S
                    self.apply_retention()
            except Exception:
                log.exception("event store maintenance failed")

    # ------------------------------------------------------------------ the operator's verdicts
    def mark(self, alert_id: str, verdict: bool, note: str = "", monitor: str | None = None) -> Verdict:
        """Record the operator's verdict on a stored alert (a later mark replaces it).
        Raises StoreError when no such alert is stored, or the id is ambiguous."""
        rows = self._alert_rows(alert_id, monitor)
        monitors = sorted({r[0] for r in rows})
        if not rows:
            raise StoreError(f"{self.path}: no alert {alert_id!r}" + (f" of monitor {monitor!r}" if monitor else "")
                             + " (run_monitor.py events lists the stored alerts)")
        if len(monitors) > 1:
            raise StoreError(f"{self.path}: alert {alert_id!r} exists for several monitors ({', '.join(monitors)}); "
                             f"say which with --monitor")
        start, end, frames, camera, position = _alert_range([json.loads(r[1]) for r in rows])
        try:
            with self._write() as db:
                db.execute("INSERT INTO verdicts (monitor, alert_id, camera, verdict, note, marked_at, start_epoch, "
                           "end_epoch, frames, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (monitor, "
                           "alert_id) DO UPDATE SET verdict = excluded.verdict, note = excluded.note, marked_at = "
                           "excluded.marked_at, camera = excluded.camera, start_epoch = excluded.start_epoch, "
                           "end_epoch = excluded.end_epoch, frames = excluded.frames, position = excluded.position",
                           (monitors[0], alert_id, camera, int(bool(verdict)), note or "", time.time(), start, end,
                            json.dumps(frames) if frames else None, json.dumps(position) if position else None))
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot record the verdict ({_reason(exc)})") from exc
        return next(v for v in self.verdicts() if v.alert_id == alert_id and v.monitor == monitors[0])

    def _alert_rows(self, alert_id: str, monitor: str | None) -> list[tuple]:
        query = "SELECT monitor, message FROM events WHERE alert_id = ?"
        params: list = [alert_id]
        if monitor:
            query += " AND monitor = ?"
            params.append(monitor)
        with self._lock:
            return self._db.execute(query + " ORDER BY seq", params).fetchall()

    def verdicts(self, camera: str | None = None) -> list[Verdict]:
        """Every recorded verdict (of one camera, if given), oldest alert first. Verdicts are
        kept when retention deletes their alerts' events."""
        query = ("SELECT monitor, alert_id, camera, verdict, note, marked_at, start_epoch, end_epoch, frames, "
                 f"{'position' if self._position_column else 'NULL'} FROM verdicts")  # NULL: read-only, schema 1
        params: list = []
        if camera is not None:
            query += " WHERE camera = ?"
            params.append(camera)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY start_epoch, marked_at", params).fetchall()
        out = []
        for monitor, alert_id, cam, verdict, note, marked_at, start, end, frames, position in rows:
            frames, position = (json.loads(frames) if frames else None), (json.loads(position) if position else None)
            if end is None:  # marked while it was open: its end may have been stored since
                now = _alert_range([json.loads(r[1]) for r in self._alert_rows(alert_id, monitor)])
                if now[1] is not None:
                    start, end, frames, position = now[0], now[1], now[2] or frames, now[4] or position
            out.append(Verdict(monitor, alert_id, cam, bool(verdict), note or "", marked_at, start, end,
                               tuple(frames) if frames else None, tuple(position) if position else None))
        return out

    def alerts_marked_false(self, camera: str) -> list[tuple[float, float | None]]:
        """For calibration (`run_monitor.py calibrate`): the time ranges (epoch seconds of the
        first and last frame; end None if unknown) of this camera's alerts that the operator
        marked false, oldest first. Calibration treats that footage as normal: a false alarm
        is exactly the footage the camera's thresholds must learn not to alert on."""
        return [(v.start, v.end) for v in self.verdicts(camera) if not v.verdict and v.start is not None]

    # ------------------------------------------------------------------ reading
    def events(self, since: float | None = None, until: float | None = None, camera: str | None = None,
               monitor: str | None = None, limit: int | None = None) -> list[StoredEvent]:
        """Stored events, oldest first (by publish time), filtered."""
        where, params = [], []
        for clause, value in (("e.ts_epoch >= ?", since), ("e.ts_epoch < ?", until), ("e.camera = ?", camera),
                              ("e.monitor = ?", monitor)):
            if value is not None:
                where.append(clause)
                params.append(value)
        query = ("SELECT e.monitor, e.seq, e.camera, e.event, e.alert_id, e.ts, e.ts_epoch, e.message, v.verdict, "
                 "v.note FROM events e LEFT JOIN verdicts v ON v.monitor = e.monitor AND v.alert_id = e.alert_id")
        if where:
            query += " WHERE " + " AND ".join(where)
        if limit is None:
            query += " ORDER BY e.ts_epoch, e.id"
        else:  # the newest `limit`, listed oldest first below
            query += f" ORDER BY e.ts_epoch DESC, e.id DESC LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        if limit is not None:
            rows.reverse()
        return [StoredEvent(m, s, c, ev, a, ts, te, json.loads(msg), None if v is None else bool(v), n or "")
                for m, s, c, ev, a, ts, te, msg, v, n in rows]

    def messages(self) -> list[dict]:
        """Every stored message, oldest first (tests and tools)."""
        return [e.message for e in self.events()]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM events").fetchone()[0]

    def counter_value(self, monitor: str, name: str = "seq") -> int | None:
        """The stored next number of a monitor's counter (None if it never ran here)."""
        with self._lock:
            row = self._db.execute("SELECT next FROM counters WHERE monitor = ? AND name = ?", (monitor, name)).fetchone()
        return None if row is None else row[0]

    # ------------------------------------------------------------------ importing the old JSONL log
    def import_messages(self, messages) -> tuple[int, int]:
        """Copy messages (e.g. an old events.jsonl) in; idempotent on (monitor, seq). Counters
        are moved past the imported seq numbers, so a monitor of that id never reuses them.
        Returns (imported, already there)."""
        added = present = 0
        top: dict[str, int] = {}
        with self._write() as db:
            for message in messages:
                if self._insert(db, message, ignore=True):
                    added += 1
                else:
                    present += 1
                monitor = str(message.get("monitor") or "")
                top[monitor] = max(top.get(monitor, -1), int(message["seq"]))
            for monitor, seq in top.items():
                row = db.execute("SELECT next FROM counters WHERE monitor = ? AND name = 'seq'", (monitor,)).fetchone()
                if row is None or row[0] <= seq:
                    _set_counter(db, monitor, "seq", seq + 1)
        return added, present

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Stop the maintenance thread, write what is held if possible, give back unused
        numbers; never raises. Events that still cannot be written are logged in full (the
        log is then their only copy)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        with self._lock:
            if self._closed:
                return
            if not self.readonly and self._counters:
                try:
                    with self._write() as db:
                        self._write_held(db)
                        for counter in self._counters:
                            counter.release(db)
                    self._recovered()
                except (sqlite3.Error, OSError, StoreError) as exc:
                    log.error("event store %s: cannot be written at shutdown (%s)", self.path, _reason(exc))
                    for message in self._held:
                        log.error("alert event not stored: %s", json.dumps(message, separators=(",", ":")))
            self._closed = True
            try:
                self._db.close()
            except sqlite3.Error as exc:
                log.error("event store %s: close failed: %s", self.path, _reason(exc))


def _alert_range(messages: list[dict]) -> tuple:
    """An alert's events -> (start epoch, end epoch, frames, camera, position) from the latest."""
    if not messages:
        return None, None, None, None, None
    last = messages[-1]

    def pair(key):
        value = last.get(key)
        return list(value) if isinstance(value, list) and len(value) == 2 else None

    times = pair("time") or [None, None]
    position = pair("position_s")
    return epoch(times[0]), epoch(times[1]), pair("frames"), last.get("camera"), \
        position if position and position[0] is not None else None


def read_store(path: str | Path) -> list[dict]:
    """Every message of a store file, oldest first (opened read-only)."""
    store = EventStore(path, readonly=True)
    try:
        return store.messages()
    finally:
        store.close()
