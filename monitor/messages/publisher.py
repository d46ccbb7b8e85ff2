"""The ZeroMQ PUB side of the message contract (docs/MESSAGES.md): two-frame messages, a
per-publisher `seq`, and sends that never block the engine. A subscriber too slow to keep
up costs dropped messages, counted, never a stalled engine."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
import time

import zmq

SCHEMA = 1
log = logging.getLogger("monitor.messages.publisher")


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds and a Z, as the contract writes times."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PublishError(RuntimeError):
    pass


class Publisher:
    """Binds (or connects to a broker's frontend) a PUB socket and stamps every message
    with schema, monitor, seq, camera, ts and type."""

    def __init__(self, endpoint: str, monitor_id: str, *, connect: bool = False,
                 high_water_mark: int = 1000, context: zmq.Context | None = None, sequence=None):
        self.endpoint = endpoint
        self.monitor_id = monitor_id
        # `sequence` (the event store's Counter) hands out seq numbers that are never reused
        # across restarts; without one, seq starts at 0.
        self._sequence = sequence
        self.seq = 0 if sequence is None else sequence.first  # the next seq
        self.sent = 0
        self.dropped = 0
        self._listeners = []
        self._lock = threading.Lock()
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, high_water_mark)
        self._socket.setsockopt(zmq.LINGER, 500)  # at close, half a second to flush what is queued
        # Without NODROP a PUB socket drops silently at the high-water mark; with it, the send
        # fails with EAGAIN (we never block: NOBLOCK), so the loss is known and counted.
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        try:
            if connect:
                self._socket.connect(endpoint)
            else:
                self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self._socket.close(0)
            verb = "connect to" if connect else "bind"
            raise PublishError(f"cannot {verb} {endpoint}: {exc}") from exc

    def add_listener(self, listener) -> None:
        """`listener(topic: str, message: dict)` is called for every message, in-process (the
        dashboard): it must be quick; an exception in it is logged, never raised here."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def publish(self, topic: str, body: dict, camera: str | None = None, ts: float | None = None,
                before_send=None) -> dict:
        """Send one message; returns the full object sent (with seq and the stamps).
        `before_send(message)` runs on the stamped message before it goes out (the event store
        writes alerts there, so that it always holds what was published, seq included)."""
        with self._lock:
            seq = self.seq if self._sequence is None else self._sequence.take(self.seq)
            message = {"schema": SCHEMA, "monitor": self.monitor_id, "seq": seq, "camera": camera,
                       "ts": iso(time.time() if ts is None else ts), "type": topic.split(".", 1)[0]}
            message.update(body)
            self.seq = seq + 1
            if before_send is not None:
                before_send(message)
            frames = [topic.encode(), json.dumps(message, separators=(",", ":")).encode()]
            try:
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                self.dropped += 1
            except zmq.ZMQError as exc:
                self.dropped += 1
                log.warning("publish %s failed: %s", topic, exc)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(topic, message)
            except Exception:
                log.exception("message listener failed")
        return message

    def close(self) -> None:
        with self._lock:
            self._socket.close()
