"""A soak of the real monitor: several cameras, faults injected on a schedule, and the monitor's
memory, threads and file descriptors sampled from /proc while it runs.

Cameras: `door`, a GStreamer RTSP server that is killed and started again; `yard`, a second RTSP
server that is paused (SIGSTOP) and resumed; `square`, the synthetic camera with injected
anomalies, so that alerts are raised all along. Subscribers: one healthy one that reads
everything, one that connects and never reads (a ZeroMQ SUB socket with a small queue), a plain
TCP client that connects and never reads, and one that comes and goes. At the end every alert in
the event store must also have reached the healthy subscriber.

Used by tests/test_soak.py (a few minutes, in CI) and benchmarks/soak.py (as long as you like).
"""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from tests.live_helpers import ROOT, free_port, monitor
from tests.rtsp_helpers import rtsp_camera, rtsp_config, rtsp_server

STALL_S = 3.0


@dataclass
class Sample:
    t: float
    rss_mb: float
    threads: int
    fds: int
    held: tuple = ()  # thread names and fd targets, to say what grew when something did


@dataclass
class Fault:
    name: str
    injected: str
    at: float
    cleared_at: float | None = None
    seen: str = ""          # what the monitor reported
    recovered: bool = False


@dataclass
class SoakResult:
    seconds: float
    samples: list[Sample]
    faults: list[Fault]
    alerts_stored: int
    alerts_received: int
    missing: list[tuple]
    seq_gaps: int
    exit_code: int
    stderr_tail: str
    messages: int
    warmup_s: float

    def after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.t >= self.warmup_s]

    def baseline(self) -> list[Sample]:
        """The last 20 s of the warm-up: everything open and streaming, no fault yet."""
        return [s for s in self.samples if self.warmup_s - 20.0 <= s.t < self.warmup_s]

    def final(self) -> list[Sample]:
        """The last sixth of the run (at least three samples), after the last fault has cleared."""
        kept = self.after_warmup()
        return kept[-max(3, len(kept) // 6):]

    def _floor(self, samples: list[Sample], what: str) -> float:
        return min(getattr(s, what) for s in samples)

    def rss_change(self) -> float:
        """The RSS floor at the end over the floor at the end of the warm-up, minus 1. Floors
        (the least of each window), because RSS swings by up to ~8 % from one sample to the next
        as a batch's large buffers are mapped and handed back; what leaks raises the floor."""
        base, end = self.baseline(), self.final()
        if not base or not end:
            return float("nan")
        return self._floor(end, "rss_mb") / self._floor(base, "rss_mb") - 1

    def growth(self, what: str) -> float:
        """Threads or fds held at the end beyond those held at the end of the warm-up (medians:
        a camera being reopened holds one thread less for a moment)."""
        base, end = self.baseline(), self.final()
        if not base or not end:
            return 0.0
        return statistics.median(getattr(s, what) for s in end) - statistics.median(getattr(s, what) for s in base)

    def table(self) -> str:
        rows = ["| fault | how it was injected | what the monitor did | recovered |", "|---|---|---|---|"]
        rows += [f"| {f.name} | {f.injected} | {f.seen or '–'} | {'yes' if f.recovered else 'NO'} |"
                 for f in self.faults]
        rows += ["", f"alerts stored {self.alerts_stored}, received by the subscriber that stayed "
                     f"{self.alerts_received}, missing {len(self.missing)}; seq gaps seen {self.seq_gaps}; "
                     f"{self.messages} messages; exit code {self.exit_code}"]
        base, end = self.baseline(), self.final()
        if base and end:
            grew = collections.Counter(end[-1].held) - collections.Counter(base[-1].held)
            if grew:
                rows += [f"held at the end beyond warm-up: {dict(grew)}"]
        if base and end:
            rows += [f"RSS at the end of warm-up {base[-1].rss_mb:.1f} MB, at the end {end[-1].rss_mb:.1f} MB "
                     f"(floors {self._floor(base, 'rss_mb'):.1f} → {self._floor(end, 'rss_mb'):.1f} MB, {self.rss_change() * 100:+.1f} %); threads {base[-1].threads} → "
                     f"{end[-1].threads}; fds {base[-1].fds} → {end[-1].fds}; {self.seconds:.0f} s"]
        return "\n".join(rows)


def proc_sample(pid: int, t0: float) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    held = []
    for kind, folder in (("thread", "task"), ("fd", "fd")):
        for entry in os.listdir(f"/proc/{pid}/{folder}"):
            try:
                held.append(f"{kind} " + (Path(f"/proc/{pid}/task/{entry}/comm").read_text().strip() if kind == "thread"
                                          else os.readlink(f"/proc/{pid}/fd/{entry}").split("[")[0]))
            except OSError:
                pass
    return Sample(time.monotonic() - t0, int(fields["VmRSS"].split()[0]) / 1024.0, int(fields["Threads"]), fds,
                  tuple(sorted(held)))


class Collector(threading.Thread):
    """The healthy subscriber: a SUB socket read without pause on its own thread."""

    def __init__(self, endpoint: str):
        super().__init__(daemon=True, name="collector")
        self.endpoint = endpoint
        self.messages: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)  # never drop on our side: we read continuously
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt_string(zmq.SUBSCRIBE, "")
        sock.connect(self.endpoint)
        self.ready.set()
        while True:
            stopping = self.stop.is_set()
            if sock.poll(500 if stopping else 100):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    with self.lock:
                        self.messages.append((frames[0].decode(), json.loads(frames[-1])))
            elif stopping:
                break   # told to stop and 0.5 s quiet: what the monitor sent as it exited is in
        sock.close(0)

    def of(self, prefix: str) -> list[dict]:
        with self.lock:
            return [m for t, m in self.messages if t.startswith(prefix)]

    def last_status(self) -> dict | None:
        statuses = self.of("status")
        return statuses[-1] if statuses else None

    def camera_state(self, name: str) -> str | None:
        status = self.last_status()
        for cam in (status or {}).get("cameras", []):
            if cam["camera"] == name:
                return cam["state"]
        return None


def stored_alerts(db: Path) -> list[dict]:
    """Every alert event in the monitor's store, read with the monitor's own `events` command."""
    done = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "events", "--db", str(db), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"events --json failed ({done.returncode}): {done.stderr[-2000:]}")
    text = done.stdout.strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _wait(predicate, timeout: float, step: float = 0.25) -> float | None:
    """Seconds until predicate() held, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def soak(workdir: Path, seconds: float, warmup_s: float = 45.0, cycles: int = 1, log=print) -> SoakResult:
    """Run the monitor for `seconds` with `cycles` rounds of faults spread over the time after
    the warm-up, and return what was measured."""
    workdir.mkdir(parents=True, exist_ok=True)
    door_port, yard_port, pub_port = free_port(), free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{pub_port}"
    door = rtsp_server(workdir, door_port, "door")
    yard = rtsp_server(workdir, yard_port, "yard")
    db = workdir / "events.db"
    cameras = "".join(rtsp_camera(name, port, stall_timeout_s=STALL_S, backoff_initial_s=0.5, backoff_max_s=2.0)
                      for name, port in (("door", door_port), ("yard", yard_port)))
    cameras += '[[cameras]]\nname = "square"\nurl = "synthetic://square?seed=900000077&rate=4&fps=15"\n'
    config = rtsp_config(workdir / "soak.toml", "soak", endpoint, cameras, status_interval=1.0)
    collector = Collector(endpoint)
    collector.start()
    collector.ready.wait(10)
    # The subscribers that must not hurt anyone: a SUB socket that never reads (its queue fills
    # at 10 messages), and a bare TCP connection that never reads either.
    stuck = zmq.Context.instance().socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 10)
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.setsockopt_string(zmq.SUBSCRIBE, "")
    stuck.connect(endpoint)
    mon = monitor(workdir, "--config", str(config), "--no-dashboard")
    t0 = time.monotonic()
    samples: list[Sample] = []
    faults: list[Fault] = []
    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.is_set():
            s = proc_sample(mon.proc.pid, t0)
            if s:
                samples.append(s)
            stop_sampling.wait(2.0)

    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    raw = None
    try:
        if _wait(lambda: collector.camera_state("door") == "streaming" and collector.camera_state("yard") == "streaming",
                 120) is None:
            raise AssertionError(f"cameras never streamed; stderr:\n{mon.stderr()[-3000:]}")
        raw = socket.create_connection(("127.0.0.1", pub_port))  # connects, never reads
        # Warm-up runs from the moment everything is connected and streaming, so that what is
        # opened at start (streams, subscribers, lazily started threads) is in the baseline.
        warmup_s += time.monotonic() - t0
        seconds = max(seconds, warmup_s + 60.0 * cycles)
        span = (seconds - warmup_s) / cycles
        for cycle in range(cycles):
            start = warmup_s + cycle * span
            _sleep_until(t0, start)
            # 1. RTSP server killed, then started again on the same port.
            f = Fault("RTSP server dies and comes back", "SIGKILL of the GStreamer server, restarted 8 s later",
                      time.monotonic() - t0)
            door.kill()
            down = _wait(lambda: collector.camera_state("door") in ("reconnecting", "stalled"), 30)
            time.sleep(8)
            door = rtsp_server(workdir, door_port, f"door{cycle}")
            up = _wait(lambda: collector.camera_state("door") == "streaming", 60)
            f.recovered = down is not None and up is not None
            f.seen = (f"reported {'down after %.1f s' % down if down is not None else 'NOT down'}, "
                      f"{'streaming again %.1f s after restart' % up if up is not None else 'NOT back'}")
            faults.append(f)
            log(f"[soak {time.monotonic() - t0:.0f}s] {f.name}: {f.seen}")
            # 2. A subscriber that comes and goes.
            gone = zmq.Context.instance().socket(zmq.SUB)
            gone.setsockopt_string(zmq.SUBSCRIBE, "")
            gone.connect(endpoint)
            time.sleep(2)
            gone.close(0)
            # 3. RTSP server paused without closing (SIGSTOP), then resumed.
            _sleep_until(t0, start + span * 0.5)
            f = Fault("RTSP server stalls without closing", f"SIGSTOP of the server for 12 s (stall timeout {STALL_S:.0f} s)",
                      time.monotonic() - t0)
            yard.proc.send_signal(signal.SIGSTOP)
            stalled = _wait(lambda: collector.camera_state("yard") in ("stalled", "reconnecting"), 30)
            time.sleep(max(0.0, 12 - (stalled or 0)))
            yard.proc.send_signal(signal.SIGCONT)
            up = _wait(lambda: collector.camera_state("yard") == "streaming", 60)
            f.recovered = stalled is not None and up is not None
            f.seen = (f"reported {collector.camera_state('yard') if stalled is None else 'stalled/down after %.1f s' % stalled}, "
                      f"{'streaming again %.1f s after SIGCONT' % up if up is not None else 'NOT back'}")
            faults.append(f)
            log(f"[soak {time.monotonic() - t0:.0f}s] {f.name}: {f.seen}")
        _sleep_until(t0, seconds)
        faults.append(Fault("subscribers stuck (SUB with a 10-message queue, a raw TCP client), one gone",
                            "connected for the whole run, never read; one SUB connected 2 s and closed",
                            0.0, seen="the healthy subscriber kept receiving", recovered=True))
    finally:
        stop_sampling.set()
        code = mon.terminate()
        collector.stop.set()
        collector.join(5)
        stuck.close(0)
        if raw is not None:
            raw.close()
        for server in (door, yard):
            if server.proc.poll() is None:
                try:
                    server.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                server.terminate(10)
    stored = stored_alerts(db)
    received = {(m["monitor"], m["seq"]) for m in collector.of("alert.") if not m.get("replayed")}
    missing = [(a["monitor"], a["seq"]) for a in stored if (a["monitor"], a["seq"]) not in received]
    seqs = sorted(m["seq"] for _, m in collector.messages)
    gaps = sum(1 for a, b in zip(seqs, seqs[1:]) if b != a + 1)
    return SoakResult(time.monotonic() - t0, samples, faults, len(stored), len(received), missing, gaps, code,
                      mon.stderr()[-3000:], len(collector.messages), warmup_s)


def _sleep_until(t0: float, t: float) -> None:
    left = t - (time.monotonic() - t0)
    if left > 0:
        time.sleep(left)
