"""run_monitor.py metrics: serve the status of one or more monitors (or of a broker's many) as
Prometheus metrics on http://HOST:PORT/metrics (monitor/messages/metrics.py), fed only by their
ZeroMQ status messages, so that it runs anywhere the messages reach, as the dashboard does."""
from __future__ import annotations

import argparse
import signal
import sys

from monitor.config import DEFAULT_ENDPOINT
from monitor.errors import ArgumentError
from monitor.messages.health import DEFAULT_MAX_LOOP_S

HELP = "serve monitors' status messages as Prometheus metrics on HTTP (/metrics)"
DEFAULT_LISTEN = "127.0.0.1:9464"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("endpoints", nargs="*", default=[DEFAULT_ENDPOINT], metavar="ENDPOINT",
                   help=f"monitors' PUB endpoints or a broker's backend (default {DEFAULT_ENDPOINT})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to serve /metrics (default {DEFAULT_LISTEN}; 0.0.0.0:PORT for a scraper elsewhere)")
    p.add_argument("--stale-s", type=float, default=10.0, metavar="S",
                   help="a monitor silent for S seconds is down: ssrl_up and ssrl_healthy 0 (default 10)")
    p.add_argument("--max-loop-s", type=float, default=DEFAULT_MAX_LOOP_S, metavar="S",
                   help=f"unhealthy when scoring has not gone round for S seconds (default {DEFAULT_MAX_LOOP_S:g})")
    from monitor.messages.keys import add_client_flags
    add_client_flags(p)


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ArgumentError(f"--listen {text!r}: give HOST:PORT, a port in 1..65535 (such as {DEFAULT_LISTEN})")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from monitor.messages.endpoints import parse
    from monitor.messages.feed import Feed
    from monitor.messages.keys import client_from_flags
    from monitor.messages.metrics import StatusCollector

    # Bad flags, endpoints and keys (ValueErrors) escape to guarded: one line, exit code 2.
    host, port = listen_address(args.listen)
    for flag, value in (("--stale-s", args.stale_s), ("--max-loop-s", args.max_loop_s)):
        if value <= 0:
            raise ArgumentError(f"{flag} {value:g}: must be more than 0 seconds")
    for endpoint in args.endpoints:
        parse(endpoint, "endpoint", bind=False)
    curve = client_from_flags(args)
    collector = StatusCollector(args.stale_s, args.max_loop_s)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise ArgumentError(f"--listen {args.listen}: cannot serve there ({exc.strerror or exc})") from exc
    print(f"serving the status of {', '.join(args.endpoints)} as Prometheus metrics on "
          f"http://{args.listen}/metrics", file=sys.stderr, flush=True)
    feed = Feed(args.endpoints, ["status"], curve=curve,
                on_problem=lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    try:
        while not stopping:
            heard = feed.next_json(200)
            if heard and heard[0] == "status":
                collector.heard(heard[1])
    finally:
        feed.close()
        server.shutdown()
        server.server_close()
    return 0
