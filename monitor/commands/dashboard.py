"""run_monitor.py dashboard: the live terminal dashboard, fed only by ZeroMQ messages.

It needs nothing but the endpoint(s): point it at a monitor's PUB socket, or at a broker to
watch many monitors at once, from this machine or another (e.g. over SSH).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.config import DEFAULT_ENDPOINT

HELP = "live terminal dashboard of one or more monitors, fed by their ZeroMQ messages"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", action="append", metavar="ENDPOINT",
                   help=f"a monitor's or a broker's PUB endpoint; repeat for several (default {DEFAULT_ENDPOINT})")
    p.add_argument("--refresh", type=float, default=4.0, metavar="HZ", help="redraws per second (default 4)")
    p.add_argument("--stale-after", type=float, default=5.0, metavar="S",
                   help="say the feed is quiet after this many seconds without a message (default 5)")
    p.add_argument("--history", type=float, default=300.0, metavar="S",
                   help="seconds of scores in each camera's sparkline (default 300)")
    p.add_argument("--db", metavar="FILE",
                   help="the monitor's event store: lets f / t mark the selected alert false / true (up/down select)")
    from monitor.messages.keys import add_client_flags
    add_client_flags(p, server="the monitors' (or broker's)")


def run(args: argparse.Namespace) -> int:
    import zmq
    from monitor.dashboard.app import terminal_console, watch_socket
    from monitor.dashboard.state import DashboardState
    from monitor.errors import ArgumentError, refuse
    from monitor.messages.endpoints import parse
    from monitor.messages.feed import Feed
    from monitor.messages.keys import client_from_flags

    # Bad options, endpoints and keys (ValueErrors) escape to guarded: one line naming the flag,
    # exit code 2 (with --debug, after the traceback).
    for name in ("refresh", "stale_after", "history"):
        if not getattr(args, name) > 0:
            raise ArgumentError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    endpoints = args.connect or [DEFAULT_ENDPOINT]
    for endpoint in endpoints:
        parse(endpoint, "--connect", bind=False)
    curve = client_from_flags(args)
    store = None
    if args.db:
        from monitor.messages.event_store import EventStore, StoreError
        if not Path(args.db).is_file():
            raise ArgumentError(f"--db {args.db}: no event store there (the monitor's --events file)")
        try:
            store = EventStore(args.db)
        except StoreError as exc:
            return refuse(exc, args.debug, prefix=f"--db {args.db}: ")
    ctx = zmq.Context()
    problems = []  # handshake failures: shown after the screen is restored, never tearing it
    sock = Feed(endpoints, curve=curve, context=ctx, on_problem=problems.append)
    try:
        console = terminal_console()
        if not console.is_terminal:
            print("error: the dashboard draws on a terminal and stdout is not one "
                  "(run it in a terminal, or use 'run_monitor.py subscribe' for a line per message)", file=sys.stderr)
            return 2
        state = DashboardState(stale_after=args.stale_after, history_s=args.history,
                               feed=", ".join(endpoints))
        try:
            mark = None if store is None else (lambda alert_id, monitor, verdict:
                                               store.mark(alert_id, verdict, monitor=monitor))
            watch_socket(sock, state, console=console, refresh_hz=args.refresh, mark=mark)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how an operator leaves; the terminal is already restored
        return 0
    finally:
        sock.close()
        ctx.term()
        if store is not None:
            store.close()
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
