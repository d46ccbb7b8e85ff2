"""Raw TCP clients of a ZeroMQ PUB socket, for the tests of subscribers that misbehave.

`RawSubscriber` speaks just enough ZMTP 3.0 (greeting, READY as a SUB, one subscription) to
become a real subscriber, then stops reading. Its socket advertises a small segment size and
a small receive buffer, as a subscriber behind an ordinary network link has: on loopback
(64 KiB segments) the kernel would buffer megabytes for it, more than a test-length run
publishes, before its queue at the publisher fills.
"""
from __future__ import annotations

import json
import socket
import struct

GREETING = b"\xff" + b"\0" * 7 + b"\x01" + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31


def _exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the publisher closed the connection")
        data += chunk
    return data


class RawSubscriber:
    def __init__(self, port: int, topic: bytes = b"", mss: int = 536, rcvbuf: int = 2048, timeout: float = 30.0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(GREETING)
        _exact(self.sock, 64)                       # the publisher's greeting
        props = b"\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
        ready = b"\x05READY" + props
        self.sock.sendall(b"\x04" + bytes([len(ready)]) + ready)
        flags, size = _exact(self.sock, 2)          # the publisher's READY command
        _exact(self.sock, size)
        self.sock.sendall(b"\x00" + bytes([1 + len(topic)]) + b"\x01" + topic)  # subscribe

    def _frame(self) -> tuple[int, bytes]:
        flags = _exact(self.sock, 1)[0]
        size = struct.unpack(">Q", _exact(self.sock, 8))[0] if flags & 0x02 else _exact(self.sock, 1)[0]
        return flags, _exact(self.sock, size)

    def drain(self, idle: float = 2.0) -> list[dict]:
        """Read what it has been sent, until `idle` seconds without data: the messages' JSON."""
        self.sock.settimeout(idle)
        out, parts = [], []
        try:
            while True:
                flags, body = self._frame()
                if flags & 0x04:
                    continue                        # a command (e.g. a heartbeat), not a message
                parts.append(body)
                if not flags & 0x01:                # the last frame of a message
                    if len(parts) == 2:
                        out.append(json.loads(parts[1]))
                    parts = []
        except (socket.timeout, EOFError, ConnectionError):
            return out

    def close(self) -> None:
        self.sock.close()


def silent_client(port: int) -> socket.socket:
    """A TCP client that connects and then neither speaks nor reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    return sock
