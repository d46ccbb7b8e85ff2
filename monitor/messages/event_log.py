"""The old event log format: one JSON object per line (`events.jsonl`), as monitors before the
SQLite event store (monitor.messages.event_store) wrote it. Read only, to export it
(`run_monitor.py events --jsonl OLD.jsonl`) or copy it into a store (`events --import`)."""
from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: str | Path) -> tuple[list[dict], list[str]]:
    """Every record of an old log -> (records, problems). A line that does not parse (the
    old log could be left with a truncated last line by a full disk) is a problem naming the
    file and the line, never an exception."""
    records, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}: line {number}: not a JSON object ({exc.msg}; a truncated line?); skipped")
                continue
            if not isinstance(record, dict):
                problems.append(f"{path}: line {number}: not a JSON object; skipped")
                continue
            records.append(record)
    return records, problems


def read_events(path: str | Path) -> list[dict]:
    """Every alert event of a file, oldest first: an SQLite event store or an old JSONL log
    (the tests and tools read either back)."""
    from monitor.messages.event_store import is_store, read_store
    if is_store(path):
        return read_store(path)
    return read_jsonl(path)[0]
