"""ZeroMQ endpoints checked before any socket sees them.

libzmq takes a lot without a word: `tcp://host:99999` binds a random port, `tcp://host` or a
typo in the host fail late or never. Here an endpoint is parsed once, and a bad one is refused
with the flag or config key it came from and the reason (EndpointError). Also here: whether
an endpoint stays on this machine (loopback or ipc), which decides the warning about
messages readable by anyone on the network.

Standard library only: the config validates endpoints without importing zmq.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

SCHEMES = ("tcp", "ipc")
ANY_PORT = "*"                  # ZeroMQ's own "any free port" (bind only); the port bound is logged
IPC_PATH_LIMIT = 107            # sun_path is 108 bytes with its terminating NUL
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
EXAMPLE = "tcp://HOST:PORT or ipc:///path"


class EndpointError(ValueError):
    """An endpoint that cannot be used; the message names where it came from and why."""


@dataclass(frozen=True)
class Endpoint:
    text: str
    scheme: str
    host: str = ""               # tcp: an IP literal (IPv6 without brackets), a name or "*"
    port: int | str | None = None  # tcp: 1..65535, or ANY_PORT when binding
    path: str = ""               # ipc

    @property
    def ipv6(self) -> bool:
        """The socket needs ZMQ_IPV6 to bind or connect to this host."""
        return ":" in self.host

    @property
    def local(self) -> bool:
        """Nobody on the network can reach it: ipc, or a loopback host."""
        if self.scheme == "ipc":
            return True
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse(text, where: str, *, bind: bool, any_port: bool = True) -> Endpoint:
    """Check `text` as an endpoint to bind (or connect to); `where` names its origin, e.g.
    "--publish" or "configs/site.toml: key 'publish.endpoint'". `any_port` lets a bind take
    ZeroMQ's `*` port."""
    def refuse(reason: str) -> EndpointError:
        return EndpointError(f"{where} {text!r}: {reason}")

    if not isinstance(text, str) or "://" not in text:
        raise refuse(f"not a ZeroMQ endpoint (expected {EXAMPLE})")
    scheme, rest = text.split("://", 1)
    if scheme == "inproc":
        raise refuse("inproc:// only reaches sockets inside one process; use tcp:// or ipc://")
    if scheme not in SCHEMES:
        raise refuse(f"scheme {scheme + '://'!r} is not supported (tcp:// or ipc://)")
    if scheme == "ipc":
        return _ipc(text, rest, bind, refuse)
    return _tcp(text, rest, bind, any_port, refuse)


def _ipc(text: str, path: str, bind: bool, refuse) -> Endpoint:
    if not path:
        raise refuse("no path (expected ipc:///path/to/socket)")
    if len(path.encode()) > IPC_PATH_LIMIT:
        raise refuse(f"the path is {len(path.encode())} bytes, longer than a Unix socket path may be "
                     f"({IPC_PATH_LIMIT})")
    if bind and not path.startswith("@"):  # @name: Linux's abstract namespace, no file
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise refuse(f"directory {folder} does not exist")
    return Endpoint(text, "ipc", path=path)


def _tcp(text: str, rest: str, bind: bool, any_port: bool, refuse) -> Endpoint:
    if ";" in rest:
        raise refuse("a source address (SRC;HOST:PORT) is not supported here")
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep:
            raise refuse("an IPv6 address opened with [ is not closed with ]")
        if not tail.startswith(":"):
            raise refuse(f"no port (expected tcp://[{host}]:PORT)")
        port_text = tail[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise refuse(f"host [{host}] is not an IPv6 address") from None
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise refuse(f"no port (expected tcp://{rest or 'HOST'}:PORT)")
        _check_host(host, bind, refuse)
    if port_text == ANY_PORT:
        if not bind:
            raise refuse("port * (any free port) only means something when binding")
        if not any_port:
            raise refuse("port * is not allowed here")
        return Endpoint(text, "tcp", host=host, port=ANY_PORT)
    if not port_text:
        raise refuse(f"no port (expected tcp://{host or 'HOST'}:PORT)")
    if not port_text.isdigit():
        raise refuse(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port == 0:
        hint = "; write tcp://HOST:* to bind any free port (the port bound is logged)" if bind else ""
        raise refuse(f"port 0 is not a port to {'bind' if bind else 'connect to'}{hint}")
    if port > 65535:
        raise refuse(f"port {port} is out of range (1-65535)")
    return Endpoint(text, "tcp", host=host, port=port)


def _check_host(host: str, bind: bool, refuse) -> None:
    if not host:
        raise refuse("no host (expected tcp://HOST:PORT)")
    if host == "*":
        if not bind:
            raise refuse("host * (every interface) only means something when binding")
        return
    if ":" in host:
        raise refuse(f"host {host!r}: an IPv6 address is written in brackets, tcp://[{host}]:PORT")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise refuse(f"host {host!r} is not an IPv4 address") from None
        return
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise refuse(f"host {host!r} is not a host name, an IP address or an interface name")


def stays_on_this_machine(endpoint: str) -> bool:
    """For an endpoint libzmq already took (e.g. the one bound): ipc, or tcp on a loopback
    address, which nobody on the network can reach."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    return is_loopback_host(rest.rpartition(":")[0].strip("[]"))


def describe_bound(endpoint: str) -> str:
    """How the log says where a socket listens: `*` and 0.0.0.0 spelled out."""
    host = endpoint.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    if host in ("0.0.0.0", "::", "*"):
        return f"{endpoint} (every interface)"
    return endpoint
