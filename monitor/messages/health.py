"""What one `status` message (docs/MESSAGES.md) says of a monitor's health: the judgement the
`health` command prints and exits on, and the line a service manager shows (systemctl status).

Unhealthy: a camera that is down (reconnecting, stalled or faulty: its reason is given), a fault
of the monitor itself (an event store it cannot write), scoring that has not gone round for
longer than a batch could take (a hung engine), or, given the monitor's status before, a camera
that dropped snippets between the two (the machine does not keep up with it now). Cameras
starting or ended (a file that finished) are not problems; they are counted."""
from __future__ import annotations

from dataclasses import dataclass, field

DOWN_STATES = ("reconnecting", "stalled", "faulty")
DEFAULT_MAX_LOOP_S = 300.0   # above the longest batch a CPU takes with the full-size backbone


@dataclass
class Health:
    monitor: str | None                # None: no status heard, from no monitor named
    healthy: bool
    summary: str                       # one line: cameras, alerts, faults
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        word = "healthy" if self.healthy else "UNHEALTHY"
        tail = "" if self.healthy else ": " + "; ".join(self.problems)
        return f"{word}: monitor {self.monitor}, {self.summary}{tail}"

    def as_dict(self) -> dict:
        return {"monitor": self.monitor, "healthy": self.healthy, "summary": self.summary, "problems": self.problems}


def judge(status: dict, max_loop_s: float = DEFAULT_MAX_LOOP_S, before: dict | None = None) -> Health:
    """`before`: the same monitor's previous status, to judge what changed since (drops)."""
    cameras = status.get("cameras") or []
    earlier = {c.get("camera"): c for c in (before or {}).get("cameras") or []}
    span = (status.get("uptime_s") or 0) - ((before or {}).get("uptime_s") or 0)
    problems = []
    for cam in cameras:
        if cam.get("state") in DOWN_STATES:
            reason = cam.get("reason") or "no reason given"
            problems.append(f"camera {cam.get('camera')} {cam.get('state')} ({reason})")
        was = earlier.get(cam.get("camera"))
        dropped = (cam.get("dropped_snippets") or 0) - ((was or {}).get("dropped_snippets") or 0)
        if was is not None and span > 0 and dropped > 0:   # (a restart, uptime going back, is no span)
            problems.append(f"camera {cam.get('camera')} falling behind ({dropped} snippets dropped in "
                            f"{span:.1f} s: the machine does not keep up)")
    for fault in status.get("faults") or []:
        problems.append(f"fault {fault.get('kind')}: {fault.get('message')}")
    age = (status.get("engine") or {}).get("loop_age_s")
    if age is not None and age > max_loop_s:
        problems.append(f"scoring has not gone round for {age:.0f} s (more than {max_loop_s:g} s: hung?)")
    streaming = sum(c.get("state") == "streaming" for c in cameras)
    counted = [f"{streaming}/{len(cameras)} cameras streaming"]
    for state in ("starting", "ended"):
        n = sum(c.get("state") == state for c in cameras)
        if n:
            counted.append(f"{n} {state}")
    in_alert = sum(bool(c.get("in_alert")) for c in cameras)
    summary = (f"up {status.get('uptime_s', 0):.0f} s, {', '.join(counted)}, {status.get('alerts_today', 0)} "
               f"alerts today{f', {in_alert} in alert now' if in_alert else ''}")
    return Health(str(status.get("monitor", "?")), not problems, summary, problems)
