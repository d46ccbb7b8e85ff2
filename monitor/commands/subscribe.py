"""run_monitor.py subscribe: print a monitor's messages as readable lines, and report gaps in
`seq` (lost messages) per monitor."""
from __future__ import annotations

import argparse
import json
import signal
import sys

from monitor.config import DEFAULT_ENDPOINT
from monitor.errors import refuse

HELP = "print a monitor's (or a broker's) messages as readable lines; reports lost messages"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT,
                   help=f"a monitor's PUB endpoint or a broker's backend (default {DEFAULT_ENDPOINT})")
    p.add_argument("--topic", action="append", default=None, metavar="PREFIX",
                   help="topic prefix to receive (alert., score., camera., status); repeat for several; default all")
    p.add_argument("--json", action="store_true", help="print each message as one JSON line (topic added)")
    p.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    p.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds without a message")
    from monitor.messages.keys import add_client_flags
    add_client_flags(p)


def _fmt(v, digits=3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def describe(topic: str, m: dict) -> str:
    """One readable line for a message of the contract."""
    head = f"{m.get('ts', '?')} {m.get('monitor', '?')}"
    kind = m.get("type") or topic.split(".", 1)[0]
    cam = m.get("camera")
    if kind == "alert":
        frames = m.get("frames") or ["?", "?"]
        if m.get("event") == "start":
            text = (f"ALERT START {cam}: score {_fmt(m.get('score'))} >= {_fmt(m.get('threshold'))}, "
                    f"frames {frames[0]}-{frames[1]}, since {(m.get('time') or ['?'])[0]}")
        else:
            text = (f"ALERT END   {cam}: peak {_fmt(m.get('peak'))}, {_fmt(m.get('duration_s'), 1)} s, "
                    f"frames {frames[0]}-{frames[1]}")
        if m.get("snapshot"):
            text += f", snapshot {m['snapshot']}"
        if m.get("reason"):
            text += f" ({m['reason']})"
        if m.get("stored") is False:
            text += " NOT STORED (the monitor's event store is faulted)"
        if m.get("replayed"):
            text += f" (replayed at {m.get('replay_ts')})"
        return f"{head} {text} [{m.get('alert_id', '')}]"
    if kind == "score":
        flag = " IN ALERT" if m.get("in_alert") else ""
        return (f"{head} score {cam} snippet {m.get('snippet')}: {_fmt(m.get('score'))} "
                f"(threshold {_fmt(m.get('threshold'))}, latency {_fmt(m.get('latency_ms'), 0)} ms){flag}")
    if kind == "camera":
        what = "DOWN" if m.get("event") == "down" else "UP"
        reason = f": {m['reason']}" if m.get("reason") else ""
        return f"{head} camera {cam} {what} ({m.get('state')}{reason}) since {m.get('since')}"
    if kind == "status":
        cams = ", ".join(f"{c.get('camera')} {c.get('state')} {_fmt(c.get('snippets_per_s'), 2)}/s"
                         for c in m.get("cameras", []))
        return (f"{head} status: up {_fmt(m.get('uptime_s'), 0)} s, alerts today {m.get('alerts_today')}, "
                f"dropped {m.get('dropped_messages')}; {cams}")
    return f"{head} {topic}: {json.dumps(m)}"


class GapTracker:
    """Per monitor: the next `seq` expected. With a topic filter other topics' seq numbers are
    skipped legitimately, so gaps are only judged when receiving everything."""

    def __init__(self):
        self.expected: dict[str, int] = {}
        self.lost: dict[str, int] = {}

    def see(self, monitor: str, seq: int) -> str | None:
        want = self.expected.get(monitor)
        self.expected[monitor] = seq + 1
        if want is None or seq == want:
            return None
        if seq > want:
            self.lost[monitor] = self.lost.get(monitor, 0) + seq - want
            return f"GAP from monitor {monitor}: {seq - want} message(s) lost (seq {want}..{seq - 1})"
        return f"monitor {monitor} restarted its sequence (seq {seq} after {want - 1})"


def run(args: argparse.Namespace) -> int:
    import zmq

    from monitor.messages.endpoints import EndpointError, parse
    from monitor.messages.feed import Feed
    from monitor.messages.keys import CurveError, client_from_flags

    topics = args.topic or [""]
    try:
        parse(args.endpoint, "endpoint", bind=False)
        curve = client_from_flags(args)
    except (EndpointError, CurveError) as exc:
        return refuse(exc, args.debug)
    sock = Feed([args.endpoint], topics, curve=curve,
                on_problem=lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
    track_gaps = topics == [""]
    if not track_gaps:
        print("note: with a topic filter, gaps in seq are not reported (other topics use those numbers)",
              file=sys.stderr, flush=True)
    gaps = GapTracker()
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    received = 0
    idle = 0.0
    try:
        while not stopping:
            if not sock.poll(200):
                idle += 0.2
                if args.timeout is not None and idle >= args.timeout:
                    break
                continue
            idle = 0.0
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            if len(frames) != 2:
                print(f"warning: a message of {len(frames)} frames, expected 2 (topic, JSON); skipped",
                      file=sys.stderr, flush=True)
                continue
            topic = frames[0].decode("utf-8", "replace")
            try:
                message = json.loads(frames[1])
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                print(f"warning: {topic}: body is not JSON ({exc}); skipped", file=sys.stderr, flush=True)
                continue
            # A replayed alert keeps its original seq: it is neither a gap nor a restart.
            if track_gaps and isinstance(message.get("seq"), int) and not message.get("replayed"):
                note = gaps.see(str(message.get("monitor")), message["seq"])
                if note:
                    if args.json:
                        print(json.dumps({"topic": "gap", "note": note}), flush=True)
                    else:
                        print(note, flush=True)
            if args.json:
                print(json.dumps({"topic": topic, **message}), flush=True)
            else:
                print(describe(topic, message), flush=True)
            received += 1
            if args.count is not None and received >= args.count:
                break
    finally:
        sock.close()
    if gaps.lost:
        print("lost messages: " + ", ".join(f"{m} {n}" for m, n in gaps.lost.items()), file=sys.stderr)
    return 0
