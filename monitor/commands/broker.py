"""run_monitor.py broker: ZeroMQ's XSUB/XPUB proxy, so that monitors on many machines
publish into one frontend and every subscriber connects to one backend."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

HELP = "relay many monitors to many subscribers (ZeroMQ XSUB/XPUB proxy)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frontend", default="tcp://0.0.0.0:5559",
                   help="where monitors connect (run --connect ENDPOINT); default tcp://0.0.0.0:5559")
    p.add_argument("--backend", default="tcp://0.0.0.0:5560",
                   help="where subscribers connect; default tcp://0.0.0.0:5560")


def run(args: argparse.Namespace) -> int:
    import zmq

    context = zmq.Context.instance()
    frontend = context.socket(zmq.XSUB)
    backend = context.socket(zmq.XPUB)
    control = context.socket(zmq.PAIR)  # lets the signal handler stop the proxy cleanly
    control.bind("inproc://broker-control")
    stopper = context.socket(zmq.PAIR)
    stopper.connect("inproc://broker-control")
    for sock in (frontend, backend, control, stopper):
        sock.setsockopt(zmq.LINGER, 0)
    try:
        frontend.bind(args.frontend)
        backend.bind(args.backend)
    except zmq.ZMQError as exc:
        print(f"error: cannot bind {exc}: frontend {args.frontend}, backend {args.backend}", file=sys.stderr)
        return 2
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
    print(f"broker: monitors -> {args.frontend}, subscribers -> {args.backend}", file=sys.stderr, flush=True)
    while not stopping.wait(0.2):
        pass
    stopper.send(b"TERMINATE")
    thread.join(2.0)
    for sock in (frontend, backend, control, stopper):
        sock.close(0)
    print("broker: stopped", file=sys.stderr, flush=True)
    return 0
