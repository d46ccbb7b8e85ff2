"""run_monitor.py mark ALERT_ID false|true: record the operator's verdict on a stored alert.

`false` says it was a false alarm: the camera's calibration then takes that footage as normal
(EventStore.alerts_marked_false). A later mark of the same alert replaces the earlier one;
`events` shows the verdict beside the alert."""
from __future__ import annotations

import argparse

from monitor.commands.store_args import ArgumentError, add_store_arguments, db_path, local
from monitor.errors import refuse

HELP = "record the operator's verdict on an alert (false: a false alarm), shown by `events`"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("alert_id", metavar="ALERT_ID", help="the alert's id, as `events` and the messages show it")
    p.add_argument("verdict", choices=("false", "true"), help="false: a false alarm; true: a real event")
    p.add_argument("--note", default="", metavar="TEXT", help="why, in a few words")
    p.add_argument("--monitor", metavar="ID", help="the alert's monitor, when several monitors share the store")
    add_store_arguments(p)


def run(args: argparse.Namespace) -> int:
    from monitor.messages.event_store import EventStore, StoreError

    path = db_path(args)  # a bad option raises ArgumentError: guarded makes it one line (--debug: the traceback)
    if not path.is_file():
        raise ArgumentError(f"{path}: no event store there (the monitor's --events file; default events.db)")
    try:
        store = EventStore(path)
        try:
            verdict = store.mark(args.alert_id, args.verdict == "true", args.note, monitor=args.monitor)
        finally:
            store.close()
    except StoreError as exc:
        return refuse(exc, args.debug)
    span = f"{local(verdict.start)} - {local(verdict.end) if verdict.end is not None else 'still open'}"
    print(f"alert {verdict.alert_id} (camera {verdict.camera}, monitor {verdict.monitor}, {span}) marked "
          f"{args.verdict}" + (f": {verdict.note}" if verdict.note else ""))
    return 0
