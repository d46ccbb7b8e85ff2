"""CPU time of this process's threads by role, from Linux's per-thread counters
(/proc/self/task/<tid>/stat): how much of an engine run the camera readers (decoding, resizing
each frame, preparing each snippet's clips) take and how much the scoring workers take. On a
CPU provider both share the same cores, so the readers' share is work the graphs cannot have:
it bounds engine_efficiency from above whatever the engine does around its calls."""
from __future__ import annotations

import os
import threading

# Thread names the engine gives (monitor.engine.Engine.start, monitor.video.sources.CameraSource).
ROLES = {"readers": ("source-",), "workers": ("engine",)}


def cpu_by_role() -> dict[str, float] | None:
    """CPU seconds (user + system) each role's live Python threads have used so far; threads of
    no role are "other". None where the per-thread counters cannot be read (not Linux)."""
    tasks = f"/proc/{os.getpid()}/task"
    if not os.path.isdir(tasks):
        return None
    tick = os.sysconf("SC_CLK_TCK")  # the counters' unit
    names = {t.native_id: t.name for t in threading.enumerate()}
    spent = dict.fromkeys([*ROLES, "other"], 0.0)
    for tid in os.listdir(tasks):
        try:
            with open(f"{tasks}/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # the name, in brackets, may hold spaces
        except OSError:
            continue  # the thread ended meanwhile
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        name = names.get(int(tid), "")
        role = next((r for r, prefixes in ROLES.items() if name.startswith(prefixes)), "other")
        spent[role] += seconds
    return spent


def since(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    """CPU seconds per role between two readings of cpu_by_role."""
    if before is None or after is None:
        return None
    return {role: after[role] - before.get(role, 0.0) for role in after}
