"""run_monitor.py broker: ZeroMQ's XSUB/XPUB proxy, so that monitors on many machines
publish into one frontend and every subscriber connects to one backend.

Both sides bind loopback unless told otherwise. With --curve-key both sides are CURVE
servers with the broker's key pair: the frontend admits only the monitors' public keys
(--curve-authorized-publishers), the backend only the subscribers' (--curve-authorized-subscribers),
so a subscriber's key cannot publish and nobody without a key can read or inject.

The broker keeps no state: killed and started again on the same endpoints, monitors and
subscribers reconnect by themselves (subscribe and the dashboard re-subscribe, see
monitor/messages/feed.py).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

HELP = "relay many monitors to many subscribers (ZeroMQ XSUB/XPUB proxy)"
FRONTEND, BACKEND = "tcp://127.0.0.1:5559", "tcp://127.0.0.1:5560"
MAX_MESSAGE_BYTES = 1 << 20     # the contract's messages are a few KiB; a bigger one closes its sender's connection
log = logging.getLogger("monitor.broker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frontend", default=FRONTEND,
                   help=f"where monitors connect (run --connect ENDPOINT); default {FRONTEND} (this machine only)")
    p.add_argument("--backend", default=BACKEND,
                   help=f"where subscribers connect; default {BACKEND} (this machine only)")
    p.add_argument("--curve-key", metavar="FILE",
                   help="CURVE on both sides: the broker's key pair (NAME.key_secret from 'keys', or env:VAR)")
    p.add_argument("--curve-authorized-publishers", metavar="DIR",
                   help="CURVE: directory of the public keys (NAME.key) of the monitors let in at the frontend")
    p.add_argument("--curve-authorized-subscribers", metavar="DIR",
                   help="CURVE: directory of the public keys (NAME.key) of the subscribers let in at the backend")


def _curve(args):
    """(frontend CurveServer, backend CurveServer) or (None, None); CurveError names the flag."""
    from monitor.messages import keys

    pubs, subs = args.curve_authorized_publishers, args.curve_authorized_subscribers
    if not args.curve_key:
        if pubs or subs:
            raise keys.CurveError(f"--curve-authorized-{'publishers' if pubs else 'subscribers'} needs --curve-key "
                                  f"(the broker's key pair)")
        return None, None
    if not (pubs and subs):
        raise keys.CurveError("--curve-key needs both --curve-authorized-publishers DIR (the monitors' public keys) "
                              "and --curve-authorized-subscribers DIR (the subscribers'): a side left plain "
                              "could be read or written by anyone")
    pair = keys.load_pair(args.curve_key, "--curve-key")
    return (keys.CurveServer(pair, keys.load_authorized(pubs, "--curve-authorized-publishers"), pubs),
            keys.CurveServer(pair, keys.load_authorized(subs, "--curve-authorized-subscribers"), subs))


def run(args: argparse.Namespace) -> int:
    import zmq

    from monitor.errors import ArgumentError
    from monitor.messages.endpoints import describe_bound, parse, stays_on_this_machine
    from monitor.messages.keys import Gatekeeper

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # A bad endpoint or key (ValueErrors) escapes to guarded: one line naming the flag, exit
    # code 2 (with --debug, after the traceback).
    for flag in ("frontend", "backend"):
        parse(getattr(args, flag), f"--{flag}", bind=True)
    front_curve, back_curve = _curve(args)

    context = zmq.Context()
    gatekeeper = Gatekeeper(context) if front_curve is not None else None  # before any bind
    frontend = context.socket(zmq.XSUB)
    backend = context.socket(zmq.XPUB)
    control = context.socket(zmq.PAIR)  # lets the signal handler stop the proxy cleanly
    control.bind("inproc://broker-control")
    stopper = context.socket(zmq.PAIR)
    stopper.connect("inproc://broker-control")
    for sock in (frontend, backend, control, stopper):
        sock.setsockopt(zmq.LINGER, 0)
    bound = {}
    try:
        for flag, sock, curve, role in (("--frontend", frontend, front_curve, "publisher"),
                                        ("--backend", backend, back_curve, "subscriber")):
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            if "://[" in getattr(args, flag[2:]):
                sock.setsockopt(zmq.IPV6, 1)
            if curve is not None:
                gatekeeper.serve(sock, curve, flag[2:], role=role)
            try:
                sock.bind(getattr(args, flag[2:]))
            except zmq.ZMQError as exc:
                raise ArgumentError(f"{flag} {getattr(args, flag[2:])!r}: cannot bind: {exc}") from exc
            bound[flag] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())

        def relay():
            try:
                zmq.proxy_steerable(frontend, backend, None, control)
            except zmq.ZMQError:
                pass
            finally:
                stopping.set()

        # The proxy runs on a thread; the main thread waits for a signal and steers it to stop.
        thread = threading.Thread(target=relay, name="broker", daemon=True)
        thread.start()
        log.info("broker: monitors -> %s, subscribers -> %s", describe_bound(bound["--frontend"]),
                 describe_bound(bound["--backend"]))
        if front_curve is not None:
            log.info("broker: %s (frontend); %d authorized subscriber key(s) from %s (backend)",
                     front_curve.describe(), len(back_curve.allowed), back_curve.allowed_origin)
        else:
            for flag, what in (("--frontend", "anyone who can reach it can publish forged messages"),
                               ("--backend", "every message is readable by anyone on the network")):
                if not stays_on_this_machine(bound[flag]):
                    log.warning("broker: %s %s without CURVE: %s (turn CURVE on with --curve-key)",
                                flag[2:], describe_bound(bound[flag]), what)
        while not stopping.wait(0.2):
            pass
        stopper.send(b"TERMINATE")
        thread.join(2.0)
    finally:
        for sock in (frontend, backend, control, stopper):
            sock.close(0)
        if gatekeeper is not None:
            gatekeeper.stop()
        context.term()
    log.info("broker: stopped")
    return 0
