"""run_monitor.py replay: republish stored alert events on a ZeroMQ socket, so that a
subscriber that was away catches up.

Each message is sent as it was stored (topic `alert.<camera>`, its original `seq`, `ts` and
every field) plus `"replayed": true`, `replay_ts` (when this replay sent it) and `replay_seq`
(its place in this replay). The socket is an XPUB, so the command sees subscriptions arrive:
it sends only once the subscribers it waits for are there (a PUB socket would send into the
void while they are still connecting, ZeroMQ's slow joiner), and it never drops a message
(XPUB_NODROP, no high-water mark).

The socket is secured as the monitor's own (run): --publish / --connect are checked by the
same rules (a bad one is one line naming the flag, exit code 2), the CURVE flags are run's
(--curve-key with --curve-authorized binding, --curve-server-key connecting to a broker), and
--config supplies its [security] section, and its broker when its [publish] connects to one.
Binding beyond this machine without CURVE is warned about.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from monitor.commands.publish_args import add_curve_arguments, apply_publish_flags
from monitor.commands.store_args import ArgumentError, add_store_arguments, db_path, parse_time
from monitor.errors import refuse

HELP = "republish stored alerts (marked replayed) for a subscriber that was away"
DEFAULT_REPLAY_ENDPOINT = "tcp://127.0.0.1:5557"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_arguments(p, "the monitor's configuration: its store's path, its [security] keys, and its broker when "
                           "[publish] connects to one")
    p.add_argument("--since", metavar="TIME", required=True,
                   help="replay alerts from this time: ISO 8601 or an age such as 30m, 1h, 2d")
    p.add_argument("--until", metavar="TIME", help="and before this time")
    p.add_argument("--camera", metavar="NAME", help="this camera's alerts only")
    p.add_argument("--monitor", metavar="ID", help="this monitor's alerts only")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--publish", metavar="ENDPOINT", default=None,
                       help=f"bind here (default {DEFAULT_REPLAY_ENDPOINT}; the monitor's own port is usually taken)")
    where.add_argument("--connect", metavar="ENDPOINT", help="connect to a broker's frontend instead of binding")
    add_curve_arguments(p, "this replay's")
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


def _settings(args: argparse.Namespace):
    """(config, curve): where to publish and how, as run takes them. Bad values raise
    (ConfigError, ArgumentError): guarded makes them one line naming the flag, exit code 2."""
    from monitor import config as cfgmod

    if args.wait_subscribers < 0 or args.wait <= 0:
        raise ArgumentError("--wait-subscribers must be >= 0 and --wait > 0")
    config = cfgmod.load(args.config)
    if not config.publish.connect:
        config.publish.endpoint = DEFAULT_REPLAY_ENDPOINT  # the monitor's own port is usually taken
        config.origins["publish.endpoint"] = "--publish (default)"
    apply_publish_flags(config, args)
    return config, cfgmod.curve_settings(config)


def run(args: argparse.Namespace) -> int:
    import zmq

    from monitor.commands.run import _setup_logging
    from monitor.messages.event_store import EventStore, StoreError
    from monitor.messages.publisher import PublishError, announce, attach, iso

    path = db_path(args)
    since = parse_time(args.since)
    until = None if args.until is None else parse_time(args.until, "--until")
    config, curve = _settings(args)
    _setup_logging("debug" if args.debug else "info")
    try:
        store = EventStore(path, readonly=True)
        try:
            events = store.events(since=since, until=until, camera=args.camera, monitor=args.monitor)
        finally:
            store.close()
    except StoreError as exc:
        return refuse(exc, args.debug)
    if not events:
        print(f"nothing to replay: no alert events in {path} since {iso(since)}", file=sys.stderr)
        return 0
    topics = [f"alert.{e.camera}" for e in events]

    endpoint, connect = config.publish.endpoint, config.publish.connect
    own_context = curve is not None and not connect  # a ZAP gatekeeper belongs to one context
    context = zmq.Context() if own_context else zmq.Context.instance()
    sock = context.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)        # a replay is finite: queue it all rather than drop
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, also a repeated one, is seen
    sock.setsockopt(zmq.LINGER, int(args.linger * 1000))
    try:
        gatekeeper = attach(sock, endpoint, connect=connect, curve=curve, context=context)
    except PublishError as exc:
        sock.close(0)
        if own_context:
            context.term()
        return refuse(exc, args.debug, prefix=f"{config.origins.get('publish.endpoint', 'publish.endpoint')}: ")
    endpoint = announce(sock, endpoint, connect=connect, curve=curve)
    try:
        return _send(sock, events, topics, endpoint, path, since, args)
    finally:
        sock.close()  # lingers until the messages are out (or --linger passes)
        if gatekeeper is not None:
            gatekeeper.stop()
        context.term()


def _send(sock, events, topics, endpoint: str, path, since: float, args: argparse.Namespace) -> int:
    """Wait for subscribers whose subscriptions take these alerts, then send them all."""
    import zmq

    from monitor.messages.publisher import iso

    wanted = 0
    deadline = time.monotonic() + args.wait
    print(f"replay: {len(events)} alert event(s) from {path} since {iso(since)}; waiting on {endpoint} for "
          f"{args.wait_subscribers} subscriber(s)", file=sys.stderr, flush=True)
    while wanted < args.wait_subscribers:
        left = deadline - time.monotonic()
        if left <= 0:
            sock.setsockopt(zmq.LINGER, 0)
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
    print(f"replayed {len(events)} alert event(s) on {endpoint}", file=sys.stderr)
    return 0
