"""What the event store's commands (events, replay, mark) share: which store file, and times
given as ISO 8601 or as an age (`30m`, `1h`, `2d`). Not a command itself (cli.COMMANDS does
not name it)."""
from __future__ import annotations

import argparse
import datetime as _dt
import re
import time
from pathlib import Path

from monitor.config import LogSection
from monitor.errors import ArgumentError  # the commands' bad option values (guarded makes them one line)

DEFAULT_DB = LogSection.events
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_AGE = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhdw]))+$")
_AGE_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def add_store_arguments(p: argparse.ArgumentParser, config_help: str = "take the store's path from this monitor "
                                                                        "configuration") -> None:
    p.add_argument("--db", metavar="FILE", help=f"the event store (default: the config's [log] events, else {DEFAULT_DB})")
    p.add_argument("--config", type=Path, help=config_help)


def db_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if args.config is not None:
        from monitor import config as cfgmod
        try:
            return Path(cfgmod.load(args.config).log.events)
        except cfgmod.ConfigError as exc:
            raise ArgumentError(str(exc)) from exc
    return Path(DEFAULT_DB)


def parse_time(text: str, option: str = "--since", now: float | None = None) -> float:
    """`2026-11-24T20:00:00Z`, `2026-11-24 20:00` (local time), `2026-11-24`, or an age before
    now: `45s`, `30m`, `1h`, `2d`, `1w`, `1h30m` -> epoch seconds."""
    value = text.strip()
    now = time.time() if now is None else now
    if _AGE.match(value):
        return now - sum(float(n) * _UNITS[u] for n, u in _AGE_PART.findall(value))
    try:
        when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise ArgumentError(f"{option} {text!r}: not a time; give ISO 8601 (2026-11-24T20:00:00Z, or local "
                            f"2026-11-24 20:00) or an age such as 30m, 1h, 2d") from None
    if when.tzinfo is None:
        when = when.astimezone()  # a time without a zone is the operator's local time
    return when.timestamp()


def local(ts: float | None) -> str:
    """Epoch seconds -> local `YYYY-MM-DD HH:MM:SS` for listings."""
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
