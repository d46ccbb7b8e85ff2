"""Telling a service manager how the monitor is: systemd's notification protocol (sd_notify).

Under a unit with `Type=notify` systemd passes NOTIFY_SOCKET, a Unix datagram socket, and with
`WatchdogSec=` also WATCHDOG_USEC (and WATCHDOG_PID, the process meant). The monitor sends
`READY=1` once its graphs are warm and its cameras started, a `STATUS=` line systemctl shows,
`WATCHDOG=1` while its scoring keeps going round (see Engine.scoring_alive), and `STOPPING=1`
on its way out. A monitor whose scoring hangs stops the pings, and systemd restarts it.

Outside such a unit (no NOTIFY_SOCKET) every call does nothing. A send that fails is logged
once and never stops the monitor: being watched must not be a way to fail."""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("monitor.messages.service")


class ServiceNotifier:
    def __init__(self, address: str | None, watchdog_s: float | None = None):
        self.address = address
        # A leading '@' names a socket in the abstract namespace (a NUL byte on the wire).
        self._target = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_s = watchdog_s   # systemd's WatchdogSec: ping at least twice within it
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ=os.environ) -> "ServiceNotifier":
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_s = None
        usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):   # a watchdog meant for this process
            try:
                watchdog_s = int(usec) / 1e6 if int(usec) > 0 else None
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number of microseconds; no watchdog pings", usec)
        return cls(address, watchdog_s)

    @property
    def active(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def _send(self, text: str) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(text.encode(), self._target)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("service manager: cannot notify %s (%s); the monitor goes on without telling it",
                            self.address, exc)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
