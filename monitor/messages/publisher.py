"""The ZeroMQ PUB side of the message contract (docs/MESSAGES.md): two-frame messages, a
per-publisher `seq`, and sends that never block the engine.

Binding, each subscriber has its own queue (the high-water mark). A subscriber too slow to
keep up, stuck or gone loses messages from its own queue only, which it sees as a gap in
`seq`; every other subscriber still receives everything. (XPUB_NODROP would instead refuse
every send, for everyone, as soon as one queue is full.) The publisher cannot see those
per-subscriber losses.

Connected to a broker there is one peer, the broker, and one queue: while the broker is away
messages wait in it (delivered when it is back), and once it is full the socket refuses
each send (XPUB_NODROP), so every message lost there is known. `dropped` counts the sends
the socket refused.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from monitor.messages.endpoints import describe_bound, stays_on_this_machine

SCHEMA = 1
log = logging.getLogger("monitor.messages.publisher")
_LINK_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds and a Z, as the contract writes times."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PublishError(RuntimeError):
    pass


def attach(socket, endpoint: str, *, connect: bool, curve, context):
    """Bind `socket` to `endpoint` (or connect it), with CURVE when `curve` is given: binding,
    a keys.CurveServer whose authorized subscribers alone get in (a ZAP gatekeeper on
    `context`, started before the bind so that there is no window without it); connecting, a
    keys.CurveClient. Returns the gatekeeper (stop it after closing the socket) or None.
    PublishError says why the bind or connect failed."""
    gatekeeper = None
    if "://[" in endpoint:
        socket.setsockopt(zmq.IPV6, 1)
    try:
        if curve is not None and not connect:
            from monitor.messages.keys import Gatekeeper
            gatekeeper = Gatekeeper(context)
            gatekeeper.serve(socket, curve, "monitor", role="subscriber")
        elif curve is not None:
            curve.secure(socket)
        if connect:
            socket.connect(endpoint)
        else:
            socket.bind(endpoint)
    except zmq.ZMQError as exc:
        if gatekeeper is not None:
            gatekeeper.stop()
        verb = "connect to" if connect else "bind"
        why = {errno.EADDRINUSE: "the address is in use (another monitor or broker there?)",
               errno.ENODEV: "the host is not an address or interface of this machine",
               errno.EADDRNOTAVAIL: "the host is not an address of this machine"}.get(exc.errno, str(exc))
        raise PublishError(f"cannot {verb} {endpoint}: {why}") from exc
    return gatekeeper


def announce(socket, endpoint: str, *, connect: bool, curve) -> str:
    """-> the endpoint really bound (tcp://*:5556 and tcp://HOST:* spelled out); logs that
    CURVE is on, or warns once when the messages reach beyond this machine without it."""
    bound = socket.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
    if curve is not None:
        log.info("%s", curve.describe())
    elif not stays_on_this_machine(bound):
        log.warning("%s %s without CURVE: every message is readable by anyone on the network%s "
                    "(turn CURVE on: [security] in the config, or --curve-key)",
                    "connected to" if connect else "publishing on", describe_bound(bound),
                    "" if connect else ", and anyone can subscribe")
    return bound


class Publisher:
    """Binds (or connects to a broker's frontend) a PUB socket and stamps every message
    with schema, monitor, seq, camera, ts and type."""

    def __init__(self, endpoint: str, monitor_id: str, *, connect: bool = False,
                 high_water_mark: int = 1000, context: zmq.Context | None = None, sequence=None, curve=None):
        """`curve`: a keys.CurveServer (binding: only its authorized subscribers connect) or a
        keys.CurveClient (connecting to a CURVE broker); None: plain ZeroMQ."""
        self.monitor_id = monitor_id
        self.connect = connect
        self.curve = curve
        # `sequence` (the event store's Counter) hands out seq numbers that are never reused
        # across restarts; without one, seq starts at 0.
        self._sequence = sequence
        self.seq = 0 if sequence is None else sequence.first  # the next seq
        self.sent = 0
        self.dropped = 0
        self._listeners = []
        self._lock = threading.Lock()
        self._gatekeeper = None
        self._link = None                 # connecting: socket monitor of the link to the broker
        self._linked = self._ever_linked = False
        self._dropped_unlinked = 0        # refused while the broker was away
        self._refused = False
        # A ZAP handler belongs to a context, one per context: a CURVE server gets its own.
        self._own_context = context is None and curve is not None and not connect
        self._context = zmq.Context() if self._own_context else (context or zmq.Context.instance())
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, high_water_mark)  # per subscriber
        self._socket.setsockopt(zmq.LINGER, 500)  # at close, half a second to flush what is queued
        if connect:  # one peer: a full queue is a loss to count, not one subscriber's problem
            self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        if connect:
            self._link = self._socket.get_monitor_socket(_LINK_EVENTS)
        try:
            self._gatekeeper = attach(self._socket, endpoint, connect=connect, curve=curve, context=self._context)
        except PublishError:
            self._close_sockets(0)
            raise
        self.endpoint = announce(self._socket, endpoint, connect=connect, curve=curve)

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
            if self._link is not None:
                self._follow_link()
            try:
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                self.dropped += 1
                if self._link is not None and not self._linked:
                    self._dropped_unlinked += 1
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

    def _follow_link(self) -> None:
        """Connected to a broker: whether it is there now, from the socket monitor's events."""
        while self._link.poll(0):
            kind = recv_monitor_message(self._link)["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and not self._linked:
                if self._ever_linked:
                    log.info("connected to %s again; %d message(s) published while it was away did not fit "
                             "in the queue and were lost (the rest are delivered now)",
                             self.endpoint, self._dropped_unlinked)
                else:
                    log.info("connected to %s", self.endpoint)
                self._linked = self._ever_linked = True
                self._refused = False
                self._dropped_unlinked = 0
            elif kind == zmq.EVENT_DISCONNECTED and self._linked:
                self._linked = False
                log.warning("lost the connection to %s: reconnecting; until it is back messages wait in a queue "
                            "of %d, and beyond that are lost (counted in dropped_messages)",
                            self.endpoint, self._socket.getsockopt(zmq.SNDHWM))
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and not self._refused:
                self._refused = True  # once: the refusal repeats at every reconnection
                log.warning("%s refused this monitor's CURVE key (public key %s): add its .key file to the "
                            "broker's authorized publishers", self.endpoint,
                            self.curve.pair.public.decode() if self.curve is not None else "-")

    def _close_sockets(self, linger: int | None = None) -> None:
        if self._link is not None:
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass
            self._link.close(0)
        self._socket.close(linger)
        if self._gatekeeper is not None:
            self._gatekeeper.stop()
        if self._own_context:
            self._context.term()

    def close(self) -> None:
        with self._lock:
            self._close_sockets()
