"""The alert event log: one JSON object per line, flushed and fsynced before the alert is
published, so that what subscribers saw is always on disk, even after a crash."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class EventLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.written = 0

    def append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            if self._file.closed:
                raise ValueError(f"{self.path}: event log already closed")
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()


def read_events(path: str | Path) -> list[dict]:
    """Every record of a log (the tests and tools read it back)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
