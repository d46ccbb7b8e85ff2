"""run_monitor.py health: ask a running monitor (or a broker) how it is, from its next `status`
message, and exit on the answer: 0 healthy, 1 unhealthy or silent, 2 bad flags. For cron, a
load balancer's or an orchestrator's probe, a monitoring system's check, or a person at night.

It judges (monitor/messages/health.py): cameras down, faults of the monitor itself, scoring
that has stopped going round. One line says what is wrong; --json prints it as an object."""
from __future__ import annotations

import argparse
import json
import sys
import time

from monitor.config import DEFAULT_ENDPOINT
from monitor.errors import ArgumentError
from monitor.messages.health import DEFAULT_MAX_LOOP_S, Health, judge

HELP = "check a running monitor from its status messages: exit 0 healthy, 1 unhealthy or no status"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT,
                   help=f"the monitor's PUB endpoint or a broker's backend (default {DEFAULT_ENDPOINT})")
    p.add_argument("--monitor", metavar="ID", help="through a broker: judge this monitor's status (default the first heard)")
    p.add_argument("--wait", type=float, default=10.0, metavar="S",
                   help="give up, unhealthy, after S seconds without a status (default 10; a monitor sends one "
                        "every status_interval, 2 s by default). A second status within S is waited for, "
                        "to judge snippets dropped between the two")
    p.add_argument("--max-loop-s", type=float, default=DEFAULT_MAX_LOOP_S, metavar="S",
                   help=f"unhealthy when scoring has not gone round for S seconds (default {DEFAULT_MAX_LOOP_S:g}: "
                        "above one batch of the full-size backbone on a CPU)")
    p.add_argument("--json", action="store_true", help="print the judgement as one JSON object")
    from monitor.messages.keys import add_client_flags
    add_client_flags(p)


def run(args: argparse.Namespace) -> int:
    from monitor.messages.endpoints import parse
    from monitor.messages.feed import Feed
    from monitor.messages.keys import client_from_flags

    # Bad flags, endpoints and keys (ValueErrors) escape to guarded: one line, exit code 2.
    for flag, value in (("--wait", args.wait), ("--max-loop-s", args.max_loop_s)):
        if value <= 0:
            raise ArgumentError(f"{flag} {value:g}: must be more than 0 seconds")
    parse(args.endpoint, "endpoint", bind=False)
    curve = client_from_flags(args)
    problems: list[str] = []   # handshakes refused: the likeliest reason for silence
    feed = Feed([args.endpoint], ["status"], curve=curve, on_problem=problems.append)
    # Two statuses of one monitor when they come within --wait: drops between them are judged.
    statuses: list[dict] = []
    deadline = time.monotonic() + args.wait
    try:
        while len(statuses) < 2 and time.monotonic() < deadline:
            heard = feed.next_json(100)
            if not heard or heard[0] != "status":
                continue
            wanted = args.monitor or (statuses[0].get("monitor") if statuses else None)   # one monitor's two
            if wanted is None or heard[1].get("monitor") == wanted:
                statuses.append(heard[1])
    finally:
        feed.close()
    if not statuses:
        who = f"monitor {args.monitor}" if args.monitor else "any monitor"
        why = f" ({problems[-1]})" if problems else ""
        line = f"UNHEALTHY: no status from {who} at {args.endpoint} within {args.wait:g} s{why}"
        print(json.dumps(Health(args.monitor, False, "", [line]).as_dict()) if args.json else line)
        return 1
    health = judge(statuses[-1], args.max_loop_s, before=statuses[0] if len(statuses) == 2 else None)
    print(json.dumps(health.as_dict()) if args.json else health.line())
    sys.stdout.flush()
    return 0 if health.healthy else 1
