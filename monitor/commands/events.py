"""run_monitor.py events: list the alert events in the event store (or in an old events.jsonl),
or copy an old events.jsonl into a store."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monitor.commands.store_args import ArgumentError, add_store_arguments, db_path, local, parse_time
from monitor.errors import refuse

HELP = "list the stored alert events (--json for JSON lines); --import an old events.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_arguments(p)
    p.add_argument("--since", metavar="TIME", help="from this time: ISO 8601 or an age such as 30m, 1h, 2d")
    p.add_argument("--until", metavar="TIME", help="before this time (same forms)")
    p.add_argument("--camera", metavar="NAME", help="this camera's events only")
    p.add_argument("--monitor", metavar="ID", help="this monitor's events only")
    p.add_argument("--limit", type=int, metavar="N", help="the newest N events only")
    p.add_argument("--json", action="store_true", help="one JSON object a line: the message as published "
                                                      "(plus verdict and note when marked)")
    p.add_argument("--jsonl", type=Path, metavar="OLD", help="read an old JSONL event log instead of the store")
    p.add_argument("--import", dest="import_", type=Path, metavar="OLD",
                   help="copy an old JSONL event log into the store (idempotent: events already there are skipped)")


def describe(message: dict, verdict: bool | None = None, note: str = "") -> str:
    """One readable line for a stored alert event."""
    from monitor.messages.event_store import epoch
    kind = str(message.get("event") or "?").upper()
    frames = message.get("frames") or ["?", "?"]
    if kind == "START":
        what = f"score {_num(message.get('score'))} >= {_num(message.get('threshold'))}"
    else:
        what = f"peak {_num(message.get('peak'))}, {_num(message.get('duration_s'), 1)} s"
        if message.get("reason"):
            what += f" ({message['reason']})"
    line = (f"{local(epoch(message.get('ts')))}  {kind:5s}  {message.get('alert_id') or '-':20s}  "
            f"{message.get('camera') or '-':12s}  {what}, frames {frames[0]}-{frames[1]}  "
            f"[{message.get('monitor')} seq {message.get('seq')}]")
    if message.get("replayed"):
        line += "  replayed"
    if message.get("stored") is False:
        line += "  (not stored when published: the store was faulted)"
    if verdict is not None:
        line += f"  marked {'true' if verdict else 'FALSE'}" + (f": {note}" if note else "")
    return line


def _num(v, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def run(args: argparse.Namespace) -> int:
    from monitor.messages.event_log import read_jsonl
    from monitor.messages.event_store import EventStore, StoreError, epoch

    # Bad option values raise ArgumentError: monitor.errors.guarded makes the one line (or, with
    # --debug, the traceback); errors that are not ValueErrors go through refuse.
    path = db_path(args)
    since = None if args.since is None else parse_time(args.since)
    until = None if args.until is None else parse_time(args.until, "--until")
    if args.limit is not None and args.limit < 1:
        raise ArgumentError(f"--limit {args.limit}: must be at least 1")

    old = args.import_ or args.jsonl
    if old is not None:
        try:
            records, problems = read_jsonl(old)
        except OSError as exc:
            raise ArgumentError(f"{old}: cannot read it ({exc.strerror or exc})") from exc
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        usable = [r for r in records if isinstance(r.get("seq"), int) and epoch(r.get("ts")) is not None]
        if len(usable) < len(records):
            print(f"warning: {old}: {len(records) - len(usable)} record(s) without a seq or a ts; skipped",
                  file=sys.stderr)
        records = usable

    if args.import_ is not None:
        try:
            store = EventStore(path)
            try:
                added, present = store.import_messages(records)
            finally:
                store.close()
        except (StoreError, OSError) as exc:
            return refuse(exc, args.debug)
        print(f"imported {added} event(s) from {args.import_} into {path} ({present} already there)")
        return 0

    if args.jsonl is not None:
        rows = [(r, None, "") for r in records
                if (since is None or epoch(r["ts"]) >= since) and (until is None or epoch(r["ts"]) < until)
                and (args.camera is None or r.get("camera") == args.camera)
                and (args.monitor is None or r.get("monitor") == args.monitor)]
        rows.sort(key=lambda row: epoch(row[0]["ts"]))
        if args.limit is not None:
            rows = rows[-args.limit:]
        source = args.jsonl
    else:
        try:
            store = EventStore(path, readonly=True)
            try:
                events = store.events(since=since, until=until, camera=args.camera, monitor=args.monitor,
                                      limit=args.limit)
            finally:
                store.close()
        except StoreError as exc:
            return refuse(exc, args.debug)
        rows = [(e.message, e.verdict, e.note) for e in events]
        source = path
    for message, verdict, note in rows:
        if args.json:
            out = dict(message)
            if verdict is not None:
                out["verdict"], out["note"] = verdict, note
            print(json.dumps(out, ensure_ascii=False), flush=False)
        else:
            print(describe(message, verdict, note))
    print(f"{len(rows)} event(s) in {source}", file=sys.stderr)
    return 0
