"""The subscriber side of the message contract: a SUB socket that keeps receiving when the
monitor or the broker behind it restarts, speaks CURVE when given keys, and refuses
oversized messages.

libzmq (4.3) reconnects a SUB socket by itself after its peer went away, but does not send
its subscriptions again on the new connection, so a subscriber behind a restarted broker
would stay connected and receive nothing. The socket monitor tells us each disconnection;
we then disconnect and connect that endpoint again, which builds a fresh pipe and sends the
subscriptions on it. Disconnecting drops what the old pipe still holds unread (the last
messages of a monitor that has just stopped, a replay's last alerts), so those are read first
and handed out before anything newer.

A CURVE handshake that fails is silent on the wire (the server sends nothing), so the
failure is reported here once per endpoint from the socket monitor: a refused key, or a
peer that speaks another mechanism.
"""
from __future__ import annotations

import json
import time
from collections import deque

import zmq
from zmq.utils.monitor import recv_monitor_message

MAX_MESSAGE_BYTES = 1 << 20     # the contract's messages are a few KiB; a bigger one closes the connection
REPAIR_INTERVAL_S = 1.0         # per endpoint, so a peer that drops every handshake cannot spin us

_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def handshake_problem(event: int, value: int, endpoint: str, curve: bool) -> str | None:
    """What a failed handshake means, in words, for the side that connected."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"{endpoint} refused this client's CURVE key (it is not among the server's authorized keys)"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return (f"{endpoint} speaks another security mechanism: "
                    + ("it does not use CURVE; drop the CURVE keys" if curve else
                       "it uses CURVE; give --curve-key and --curve-server-key"))
        if value in (zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC, zmq.PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE):
            return f"{endpoint}: the CURVE handshake failed (is --curve-server-key that server's public key?)"
        return f"{endpoint}: the handshake failed (ZMTP protocol error {value:#x})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return f"{endpoint}: the handshake failed " + ("(is --curve-server-key that server's public key?)" if curve else
                                                      "(if the server uses CURVE, give --curve-key and --curve-server-key)")
    return None


class Feed:
    """A SUB socket on `endpoints` (already checked) for `topics`. Call `poll` and
    `recv_multipart` as on a socket; `poll` also repairs connections that were lost.
    `on_problem(text)` hears each kind of handshake failure once per endpoint until one
    succeeds."""

    def __init__(self, endpoints: list[str], topics=("",), *, curve=None, context: zmq.Context | None = None,
                 on_problem=None, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.endpoints = list(endpoints)
        self.curve = curve
        self.on_problem = on_problem or (lambda text: None)
        self.reconnects = 0
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        for topic in topics:
            self.socket.setsockopt_string(zmq.SUBSCRIBE, topic)
        if curve is not None:
            curve.secure(self.socket)
        self._events = self.socket.get_monitor_socket(_EVENTS)
        self._reported: set[tuple[str, str]] = set()  # (endpoint, problem) told since its last success
        self._last_repair: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._held: deque = deque()  # read off a pipe about to be disconnected, not yet handed out
        for endpoint in self.endpoints:
            if "://[" in endpoint:  # an IPv6 literal
                self.socket.setsockopt(zmq.IPV6, 1)
            self.socket.connect(endpoint)

    def poll(self, timeout_ms: int) -> bool:
        self._repair()
        return bool(self._held) or bool(self.socket.poll(timeout_ms))

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        if self._held:
            return self._held.popleft()
        return self.socket.recv_multipart(flags)

    def _endpoint_of(self, event: dict) -> list[str]:
        name = event.get("endpoint", b"")
        name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        return [name] if name in self.endpoints else list(self.endpoints)

    def _repair(self) -> None:
        now = time.monotonic()
        while self._events.poll(0):
            event = recv_monitor_message(self._events)
            kind, value = event["event"], event.get("value", 0)
            for endpoint in self._endpoint_of(event):
                if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._reported = {(e, p) for e, p in self._reported if e != endpoint}
                elif kind == zmq.EVENT_DISCONNECTED:
                    # Not at once for an endpoint repaired a moment ago: a peer refusing us would spin.
                    self._due[endpoint] = max(now, self._last_repair.get(endpoint, 0.0) + REPAIR_INTERVAL_S)
                else:
                    problem = handshake_problem(kind, value, endpoint, self.curve is not None)
                    if problem and (endpoint, problem) not in self._reported:
                        self._reported.add((endpoint, problem))
                        self.on_problem(problem)
        for endpoint, when in list(self._due.items()):
            if when <= now:
                del self._due[endpoint]
                self._last_repair[endpoint] = now
                self._hold()
                try:
                    self.socket.disconnect(endpoint)
                except zmq.ZMQError:
                    pass  # already gone: connect below builds it again
                self.socket.connect(endpoint)
                self.reconnects += 1

    def _hold(self) -> None:
        """Read everything already received (at most the receive high-water mark a pipe)."""
        while True:
            try:
                self._held.append(self.socket.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return

    def next_json(self, timeout_ms: int) -> tuple[str, dict] | None:
        """(topic, message) of the next message of the contract (a topic and a JSON object)
        within `timeout_ms`; None when none came or what came was not one."""
        if not self.poll(timeout_ms):
            return None
        try:
            topic, body = self.recv_multipart(zmq.NOBLOCK)
            message = json.loads(body)
        except (zmq.Again, ValueError):   # ValueError: not two frames, or not JSON
            return None
        return (topic.decode("utf-8", "replace"), message) if isinstance(message, dict) else None

    def close(self) -> None:
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self._events.close(0)
        self.socket.close(0)
