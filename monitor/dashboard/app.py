"""The live terminal dashboard: a rich Live view on the alternate screen.

Two ways in, one view:
- `watch_socket(sock, state)`: the standalone `run_monitor.py dashboard --connect ...`, fed by a
  ZeroMQ SUB socket (from a monitor or a broker, on this machine or another).
- `attach_dashboard(publisher, info)`: inside the monitor. The publisher calls our listener
  with every (topic, message) it publishes; the listener only appends to a deque, so the
  engine pays one function call per message, and all parsing and drawing happen on the
  dashboard's own thread.

The screen is redrawn `refresh_hz` times a second (default 4) whether or not messages came,
so ages and the feed-quiet banner stay true. Drawing happens on the alternate screen and
overwrites it in place (no clearing), which is what keeps it from flickering; each frame is
laid out for the terminal size of that moment, which is what makes it survive resizes.
Keys are read from the terminal in cbreak mode on a thread: `q` quits; Ctrl-C still sends
SIGINT because cbreak keeps signals on. Where a way to record verdicts is given (`mark`: the
monitor's event store, or `dashboard --db FILE`), up/down (or k/j) move a cursor over the
recent alerts and `f` marks the selected one a false alarm, `t` a real one
(EventStore.mark, as `run_monitor.py mark ALERT_ID false` does). Keys only queue what they
ask for; the drawing thread does it, so the state is only ever touched from one thread.
"""
from __future__ import annotations

import atexit
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Mapping

from rich.console import Console
from rich.live import Live

from monitor.dashboard.render import DashboardView
from monitor.dashboard.state import DashboardState

DEFAULT_REFRESH_HZ = 4.0
INBOX_LIMIT = 100_000          # messages held for the drawing thread; beyond this the oldest go (seen as a seq gap)
DRAIN_LIMIT = 20_000           # messages parsed per frame at most, so a flood cannot freeze the screen


class KeyReader:
    """Calls `on_key(char)` for each key pressed on the controlling terminal.

    The terminal is put in cbreak mode (keys arrive one at a time, no echo, signals kept) and
    restored on exit. Without a terminal (stdin redirected and no /dev/tty) it does nothing."""

    def __init__(self, on_key: Callable[[str], None]):
        self.on_key = on_key
        self._fd: int | None = None
        self._own_fd = False
        self._saved: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "KeyReader":
        try:
            import termios
            import tty
        except ImportError:  # not a POSIX terminal: q is unavailable, Ctrl-C still works
            return self
        try:
            if sys.stdin is not None and sys.stdin.isatty():
                self._fd = sys.stdin.fileno()
            else:
                self._fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
                self._own_fd = True
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd, termios.TCSANOW)
        except (OSError, termios.error, ValueError):
            self._close()
            return self
        self._thread = threading.Thread(target=self._loop, name="dashboard-keys", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self._fd, 32)
            except (OSError, ValueError):
                return
            if not data:
                return  # the terminal went away
            for ch in data.decode("utf-8", errors="ignore"):
                self.on_key(ch)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._fd is not None and self._saved is not None:
            import termios
            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            except (OSError, termios.error):
                pass
        self._close()

    def _close(self) -> None:
        if self._own_fd and self._fd is not None:
            os.close(self._fd)
        self._fd, self._own_fd, self._saved = None, False, None


class KeyDecoder:
    """Characters from the terminal -> key names: letters as they are, the arrow keys' escape
    sequences (ESC [ A, or ESC O A in application mode) as "up" / "down" / "left" / "right"."""
    ARROWS = {"A": "up", "B": "down", "C": "right", "D": "left"}

    def __init__(self):
        self._pending = ""

    def feed(self, ch: str) -> str | None:
        if self._pending:
            self._pending += ch
            if len(self._pending) == 2:
                if ch not in "[O":
                    self._pending = ""
                return None
            key, self._pending = self.ARROWS.get(ch), ""
            return key
        if ch == "\x1b":
            self._pending = ch
            return None
        return ch


MOVES = {"up": -1, "k": -1, "down": 1, "j": 1}
VERDICT_KEYS = {"f": False, "F": False, "t": True, "T": True}


def handle_key(state: DashboardState, key: str, mark: Callable[[str, str, bool], object] | None) -> None:
    """Do what a key asks, on the drawing thread: move the cursor, or record a verdict on the
    selected alert through `mark(alert_id, monitor, verdict)` and say how it went."""
    if key in MOVES:
        state.move_selection(MOVES[key])
        return
    if key not in VERDICT_KEYS:
        return
    verdict = VERDICT_KEYS[key]
    if mark is None:
        state.notice = "marking needs the event store: run_monitor.py dashboard --db FILE, or mark ALERT_ID false"
        return
    chosen = state.selected_alert()
    if chosen is None:
        state.notice = "select an alert first (up/down)"
        return
    monitor, alert_id = chosen
    try:
        mark(alert_id, monitor, verdict)
    except Exception as exc:  # a store that refuses says why on the screen; the dashboard goes on
        state.notice = f"{alert_id} not marked: {exc}"
        return
    state.set_verdict(monitor, alert_id, verdict)
    state.notice = f"{alert_id} marked {'true (a real event)' if verdict else 'false (a false alarm)'}"


def terminal_console() -> Console:
    """A Console for stdout that measures the terminal on every frame. rich takes COLUMNS and
    LINES from the environment as a fixed size when they are set (some shells export them),
    which would freeze the layout at that size; the dashboard must follow the real terminal."""
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return Console(_environ=environ)


def run_live(state: DashboardState, pump: Callable[[float], None], stop: threading.Event, *,
             console: Console | None = None, refresh_hz: float = DEFAULT_REFRESH_HZ,
             on_quit: Callable[[], None] | None = None,
             mark: Callable[[str, str, bool], object] | None = None) -> None:
    """Draw `state` until `stop` is set. `pump(timeout)` feeds the state and must return
    within about `timeout` seconds; it is called between frames on this thread. `mark`
    records an operator's verdict (alert_id, monitor, verdict); None: the keys say how to."""
    console = console or terminal_console()
    period = 1.0 / max(0.5, float(refresh_hz))
    decoder = KeyDecoder()
    keys: deque = deque(maxlen=64)
    state.can_mark = mark is not None

    def on_key(ch: str) -> None:
        key = decoder.feed(ch)
        if key in ("q", "Q"):
            (on_quit or stop.set)()
        elif key is not None:
            keys.append(key)   # done on the drawing thread, between frames

    # We redraw ourselves once per frame (auto_refresh off), right after feeding, so what is on
    # screen is never older than one frame and no second thread renders behind our back.
    with KeyReader(on_key), Live(DashboardView(state.snapshot()), console=console, screen=True,
                                 auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:
        next_frame = time.monotonic()
        while not stop.is_set():
            next_frame += period
            pump(max(0.0, next_frame - time.monotonic()))
            while keys:
                handle_key(state, keys.popleft(), mark)
            live.update(DashboardView(state.snapshot()), refresh=True)
            if time.monotonic() > next_frame + period:  # fell behind (a slow terminal): do not try to catch up
                next_frame = time.monotonic()


def watch_socket(sock, state: DashboardState, *, console: Console | None = None,
                 refresh_hz: float = DEFAULT_REFRESH_HZ, stop: threading.Event | None = None,
                 mark: Callable[[str, str, bool], object] | None = None) -> None:
    """The standalone dashboard: feed `state` from a ZeroMQ SUB socket (or anything with its
    `poll(ms)` and `recv_multipart(flags)`, such as monitor.messages.feed.Feed) and draw until
    `q`, Ctrl-C (KeyboardInterrupt propagates after the terminal is restored) or `stop`."""
    import zmq

    stop = stop or threading.Event()

    def pump(timeout: float) -> None:
        deadline = time.monotonic() + timeout
        taken = 0
        while taken < DRAIN_LIMIT and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                return
            while taken < DRAIN_LIMIT:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                state.feed_frames(frames)
                taken += 1

    run_live(state, pump, stop, console=console, refresh_hz=refresh_hz, mark=mark)


# -- inside the monitor -------------------------------------------------------------------

def _get(info: Any, key: str, default: Any = None) -> Any:
    if info is None:
        return default
    if isinstance(info, Mapping):
        return info.get(key, default)
    return getattr(info, key, default)


class DashboardHandle:
    """What `attach_dashboard` returns; `stop()` restores the terminal (safe to call twice)."""

    def __init__(self, publisher: Any = None, listener: Callable | None = None, state: DashboardState | None = None):
        self.publisher = publisher
        self.listener = listener
        self.state = state
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.frames = 0                 # screens drawn (benchmarks/bench_dashboard.py reports the rate)
        self.cpu_s = 0.0                # CPU time of the drawing thread, set when it ends

    @property
    def active(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = 3.0) -> None:
        self.stop_event.set()
        remove = getattr(self.publisher, "remove_listener", None)
        if remove is not None and self.listener is not None:
            try:
                remove(self.listener)
            except (ValueError, KeyError):
                pass
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        atexit.unregister(self.stop)


def _default_quit() -> None:
    # The same path as Ctrl-C, so the monitor shuts down the way it always does.
    os.kill(os.getpid(), signal.SIGINT)


def attach_dashboard(publisher: Any, info: Any = None, *, console: Console | None = None,
                     refresh_hz: float = DEFAULT_REFRESH_HZ, stale_after: float = 5.0,
                     history_s: float = 300.0, force: bool = False) -> DashboardHandle:
    """Show the dashboard inside the monitor, fed by `publisher.add_listener(callback(topic, msg))`.

    `info` (a mapping or an object; every key optional) seeds the header until the first
    `status` heartbeat: `monitor` (id), `model` (name, or {name, stage, providers, warning}), `stage`,
    `providers`, `cameras` (names, or mappings with `camera`), `endpoint` (where the PUB socket
    listens), `status_interval` (the heartbeat period; staleness waits for two missed ones),
    `on_quit` or `stop` (called on `q`; default: SIGINT to this process, the monitor's Ctrl-C path),
    `mark` (records a verdict: mark(alert_id, monitor, verdict); the keys f and t call it).
    When stdout is not a terminal nothing is drawn (unless `force`) and the handle is inert.
    """
    console = console or terminal_console()
    if not (force or console.is_terminal):
        return DashboardHandle()
    model = _get(info, "model")
    if isinstance(model, Mapping):
        name, stage, providers = model.get("name", ""), model.get("stage"), model.get("providers", ())
        warning = model.get("warning") or ""
    else:
        name, stage, providers, warning = model or "", None, (), ""
    stage = _get(info, "stage", stage)
    providers = _get(info, "providers", providers) or ()
    cameras = []
    for c in _get(info, "cameras") or ():
        if isinstance(c, Mapping):
            c = c.get("camera") or c.get("name")
        elif not isinstance(c, str):
            c = getattr(c, "name", None)
        if c:
            cameras.append(str(c))
    endpoint = _get(info, "endpoint")
    interval = _get(info, "status_interval")
    if isinstance(interval, (int, float)) and interval > 0:
        stale_after = max(stale_after, 2.5 * interval)  # two missed heartbeats before "quiet"
    state = DashboardState(stale_after=stale_after, history_s=history_s,
                           feed=f"this monitor{', publishing on ' + str(endpoint) if endpoint else ''}")
    state.announce(monitor=str(_get(info, "monitor", "") or ""), model=str(name or ""),
                   stage=stage, providers=tuple(str(p) for p in providers), cameras=cameras,
                   warning=str(warning))

    inbox: deque = deque(maxlen=INBOX_LIMIT)
    handle = DashboardHandle(publisher, None, state)

    def listener(topic: str, msg: dict) -> None:
        inbox.append((topic, msg))   # the whole cost to the engine

    handle.listener = listener

    def pump(timeout: float) -> None:
        handle.frames += 1
        handle.stop_event.wait(timeout)
        for _ in range(min(len(inbox), DRAIN_LIMIT)):
            topic, msg = inbox.popleft()
            state.feed(topic, msg)

    def main() -> None:
        cpu = time.thread_time()
        try:
            run_live(state, pump, handle.stop_event, console=console, refresh_hz=refresh_hz,
                     on_quit=_get(info, "on_quit") or _get(info, "stop") or _default_quit, mark=_get(info, "mark"))
        except BaseException as exc:  # never take the engine down; say why the screen went away
            handle.error = exc
            print(f"dashboard stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            handle.cpu_s = time.thread_time() - cpu

    publisher.add_listener(listener)
    handle.thread = threading.Thread(target=main, name="dashboard", daemon=True)
    handle.thread.start()
    atexit.register(handle.stop)  # restore the terminal even if the monitor forgets to
    return handle
