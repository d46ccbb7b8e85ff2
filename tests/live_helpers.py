"""Running the real monitor for the end-to-end tests: subprocesses of run_monitor.py, real
ZeroMQ sockets on loopback, and a wait that collects messages until a condition holds."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 90.0  # generous: the CI machine is shared and slow; nothing asserts on speed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class Process:
    """A child process whose output goes to files, killed at the end whatever happens."""

    def __init__(self, args: list[str], workdir: Path, name: str, python: str = sys.executable):
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        # Calibrations a developer stored for their own cameras must not change a test's run.
        env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_STATE_HOME=str(workdir / "xdg-state"))
        self.proc = subprocess.Popen([python, *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=open(self.out, "w"), stderr=open(self.err, "w"))

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def terminate(self, timeout: float = TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.proc.args} did not exit; stderr:\n{self.stderr()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def monitor(workdir: Path, *args: str, name: str = "monitor") -> Process:
    """run_monitor.py with `args`. A run that names no endpoint of its own (no --publish,
    --connect or --config) publishes on a free port, not the default one, which another
    monitor on the machine may hold."""
    is_run = not args or args[0].startswith("-")
    if is_run and not {"--publish", "--connect", "--config", "--help", "-h"} & set(args):
        args = (*args, "--publish", endpoint())
    return Process([str(ROOT / "run_monitor.py"), *args], workdir, name)


class Subscriber:
    """A SUB socket that keeps every message it receives, in order."""

    def __init__(self, endpoint: str, topics=("",)):
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RECONNECT_IVL, 20)  # catch a monitor that binds late quickly
        for t in topics:
            self.socket.setsockopt_string(zmq.SUBSCRIBE, t)
        self.socket.connect(endpoint)
        self.messages: list[tuple[str, dict, list[bytes]]] = []

    def poll(self, seconds: float) -> None:
        if self.socket.poll(int(seconds * 1000)):
            while True:
                try:
                    frames = self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
                self.messages.append((frames[0].decode(), json.loads(frames[-1]), frames))

    def drain(self, quiet: float = 0.5, timeout: float = 30.0) -> None:
        """Receive until `quiet` seconds pass with nothing new: after the publisher has exited,
        what it sent last may still be on its way in (one poll can stop at the first lull)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = len(self.messages)
            self.poll(quiet)
            if len(self.messages) == before:
                return

    def wait_for(self, predicate, what: str, timeout: float = TIMEOUT, process: Process | None = None):
        """Receive until predicate(messages) is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self.messages)
            if value:
                return value
            if process is not None and process.proc.poll() is not None and not self.socket.poll(0):
                value = predicate(self.messages)
                if value:
                    return value
                raise AssertionError(f"monitor exited ({process.proc.returncode}) before {what}; "
                                     f"stderr:\n{process.stderr()[-3000:]}")
            self.poll(0.2)
        raise AssertionError(f"no {what} within {timeout} s; got {len(self.messages)} messages: "
                             f"{sorted({t for t, _, _ in self.messages})}")

    def of(self, prefix: str) -> list[dict]:
        return [m for t, m, _ in self.messages if t.startswith(prefix)]

    def close(self) -> None:
        self.socket.close(0)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def score_to_the_end(engine, publisher, timeout: float, what: str = "the files") -> None:
    """Run an in-process Engine over sources that end: started, waited for, stopped, its open
    alerts closed and the publisher closed, whatever happened."""
    try:
        engine.start()
        assert engine.wait(timeout), f"{what} were not scored in time"
        assert engine.error is None
    finally:
        engine.stop()
        engine.join()
        engine.close_alerts()
        publisher.close()


def file_scores(bundle, video, window: int | None = None, timeout: float = 300):
    """A video file, not paced, through the real engine -> its raw scores by snippet."""
    import uuid

    import numpy as np

    from monitor.config import CameraConfig, Config
    from monitor.engine import Engine
    from monitor.messages.publisher import Publisher

    config = Config()
    config.model.window = window
    config.log.snapshots = None
    config.cameras = [CameraConfig(url=str(video), name="cam")]
    publisher = Publisher(f"inproc://file-scores-{uuid.uuid4().hex}", "file-scores")
    scores = {}
    publisher.add_listener(lambda t, m: scores.__setitem__(m["snippet"], m["raw_score"]) if t.startswith("score.") else None)
    score_to_the_end(Engine(config, bundle, publisher, None), publisher, timeout, "the video")
    return np.array([scores[i] for i in sorted(scores)], np.float32)


def video_from(video, out, first_frame: int):
    """The frames of `video` from `first_frame` on, written to `out` as MJPG at its frame rate."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), capture.get(cv2.CAP_PROP_FPS), size)
    i = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if i >= first_frame:
            writer.write(frame)
        i += 1
    writer.release()
    capture.release()
    return out
