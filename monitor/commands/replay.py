"""run_monitor.py replay: republish stored alert events on a ZeroMQ socket, so that a
subscriber that was away catches up.

Each message is sent as it was stored (topic `alert.<camera>`, its original `seq`, `ts` and
every field) plus `"replayed": true`, `replay_ts` (when this replay sent it) and `replay_seq`
(its place in this replay). The socket is an XPUB, so the command sees subscriptions arrive:
it sends only once the subscribers it waits for are there (a PUB socket would send into the
void while they are still connecting, ZeroMQ's slow joiner), and it never drops a message
(XPUB_NODROP, no high-water mark).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from monitor.commands.store_args import ArgumentError, add_store_arguments, db_path, parse_time

HELP = "republish stored alerts (marked replayed) for a subscriber that was away"
DEFAULT_REPLAY_ENDPOINT = "tcp://127.0.0.1:5557"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_arguments(p)
    p.add_argument("--since", metavar="TIME", required=True,
                   help="replay alerts from this time: ISO 8601 or an age such as 30m, 1h, 2d")
    p.add_argument("--until", metavar="TIME", help="and before this time")
    p.add_argument("--camera", metavar="NAME", help="this camera's alerts only")
    p.add_argument("--monitor", metavar="ID", help="this monitor's alerts only")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--publish", metavar="ENDPOINT", default=None,
                       help=f"bind here (default {DEFAULT_REPLAY_ENDPOINT}; the monitor's own port is usually taken)")
    where.add_argument("--connect", metavar="ENDPOINT", help="connect to a broker's frontend instead of binding")
    p.add_argument("--wait-subscribers", type=int, default=1, metavar="N",
                   help="send once N subscriptions that receive alerts have arrived (default 1; 0: send at once)")
    p.add_argument("--wait", type=float, default=30.0, metavar="S",
                   help="give up after S seconds without enough subscribers (default 30)")
    p.add_argument("--linger", type=float, default=10.0, metavar="S",
                   help="at the end, wait up to S seconds for the messages to leave (default 10)")


def _subscription(frame: bytes) -> tuple[bool, str] | None:
    """An XPUB subscription frame -> (subscribe?, topic prefix); None for anything else."""
    if not frame or frame[0] not in (0, 1):
        return None
    return frame[0] == 1, frame[1:].decode("utf-8", "replace")


def run(args: argparse.Namespace) -> int:
    import zmq

    from monitor.messages.event_store import EventStore, StoreError
    from monitor.messages.publisher import iso

    try:
        path = db_path(args)
        since = parse_time(args.since)
        until = None if args.until is None else parse_time(args.until, "--until")
    except ArgumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.wait_subscribers < 0 or args.wait <= 0:
        print("error: --wait-subscribers must be >= 0 and --wait > 0", file=sys.stderr)
        return 2
    try:
        store = EventStore(path, readonly=True)
        try:
            events = store.events(since=since, until=until, camera=args.camera, monitor=args.monitor)
        finally:
            store.close()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not events:
        print(f"nothing to replay: no alert events in {path} since {iso(since)}", file=sys.stderr)
        return 0
    topics = [f"alert.{e.camera}" for e in events]

    endpoint = args.connect or args.publish or DEFAULT_REPLAY_ENDPOINT
    context = zmq.Context.instance()
    sock = context.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)        # a replay is finite: queue it all rather than drop
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, also a repeated one, is seen
    sock.setsockopt(zmq.LINGER, int(args.linger * 1000))
    try:
        if args.connect:
            sock.connect(endpoint)
        else:
            sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close(0)
        print(f"error: cannot {'connect to' if args.connect else 'bind'} {endpoint}: {exc}", file=sys.stderr)
        return 2

    # Wait for subscribers whose subscriptions take these alerts.
    wanted = 0
    deadline = time.monotonic() + args.wait
    print(f"replay: {len(events)} alert event(s) from {path} since {iso(since)}; waiting on {endpoint} for "
          f"{args.wait_subscribers} subscriber(s)", file=sys.stderr, flush=True)
    while wanted < args.wait_subscribers:
        left = deadline - time.monotonic()
        if left <= 0:
            sock.close(0)
            print(f"error: no subscriber for these alerts on {endpoint} within {args.wait:g} s; nothing replayed",
                  file=sys.stderr)
            return 1
        if sock.poll(int(min(left, 0.2) * 1000), zmq.POLLIN):
            sub = _subscription(sock.recv())
            if sub is not None and sub[0] and any(t.startswith(sub[1]) for t in topics):
                wanted += 1

    for i, (event, topic) in enumerate(zip(events, topics)):
        message = dict(event.message, replayed=True, replay_ts=iso(time.time()), replay_seq=i)
        sock.send_multipart([topic.encode(), json.dumps(message, separators=(",", ":")).encode()])
    sock.close()  # lingers until the messages are out (or --linger passes)
    print(f"replayed {len(events)} alert event(s) on {endpoint}", file=sys.stderr)
    return 0
