"""Pure rendering for the terminal dashboard: DashboardSnapshot in, rich renderables out.

No I/O and no clocks here (the snapshot carries every age and the wall time), so each piece
can be rendered to a string and checked in a test. Every string that came from the feed goes
through `redact` before it is shown: camera names, sources and reasons should already be
stripped of credentials by the publisher, but a dashboard on an operator's screen is the last
place a password may leak from, so it checks again.
"""
from __future__ import annotations

import math
from datetime import datetime
from typing import Sequence

import numpy as np
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from monitor.redaction import redact  # the one rule, shared with the publisher's side
from monitor.dashboard.state import AlertView, CameraView, DashboardSnapshot

SPARK = "▁▂▃▄▅▆▇█"
PARTIAL = " ▏▎▍▌▋▊▉"          # 0..7 eighths of a cell, for a smooth bar
GAP = 2                       # spaces between two columns
ALERT_ROW_STYLE = "on grey23"
NEAR = 0.75                   # a score above NEAR * threshold is shown as "getting close"
OK_STYLE, NEAR_STYLE, HOT_STYLE = "green", "yellow", "bold red"
STATE_STYLES = {"streaming": "green", "reconnecting": "yellow", "stalled": "bold red", "faulty": "bold magenta",
                "starting": "dim", "ended": "dim"}
COOLDOWN_STYLE = "cyan"
WARNING_STYLE = "bold black on yellow"



def _level_style(score: float, threshold: float | None) -> str:
    if threshold is None:
        return "cyan"
    if score >= threshold:
        return HOT_STYLE
    return NEAR_STYLE if score >= NEAR * threshold else OK_STYLE


def score_text(score: float | None, threshold: float | None) -> Text:
    if score is None:
        return Text("  –  ", style="dim")
    return Text(f"{score:.3f}", style=_level_style(score, threshold))


def score_bar(score: float | None, threshold: float | None, width: int) -> Text:
    """A bar of `width` cells filled to `score` (0..1) with a ┃ marking the threshold.

    Green below NEAR * threshold, yellow up to it, red at or above it. The marker shows only
    while the bar has not reached it (past it the whole bar is red anyway)."""
    width = max(1, int(width))
    if score is None:
        return Text("·" * width, style="dim")
    score = min(max(score, 0.0), 1.0)
    full, part = divmod(int(round(score * width * 8)), 8)
    filled = "█" * full + (PARTIAL[part] if part and full < width else "")
    mark = None if threshold is None else min(width - 1, max(0, int(threshold * width)))
    text = Text(filled, style=_level_style(score, threshold))   # one span per run: cheap to draw
    rest = width - len(filled)
    if mark is not None and mark >= len(filled):
        text.append("─" * (mark - len(filled)), "grey37")
        text.append("┃", "bold bright_white")
        text.append("─" * (width - mark - 1), "grey37")
    elif rest:
        text.append("─" * rest, "grey37")
    return text


def history_cells(history, span_s: float, width: int) -> list[float | None]:
    """Bucket (age in seconds, score) points into `width` cells covering the last `span_s`
    seconds, newest on the right; each cell keeps its highest score so a short spike survives."""
    width = max(1, int(width))
    points = np.asarray(history, dtype=np.float64).reshape(-1, 2)
    points = points[(points[:, 0] >= 0) & (points[:, 0] <= span_s)]
    if not len(points):
        return [None] * width
    index = width - 1 - np.minimum(width - 1, (points[:, 0] / (span_s / width)).astype(np.int64))
    cells = np.full(width, -np.inf)
    np.maximum.at(cells, index, points[:, 1])
    return [None if v == -np.inf else float(v) for v in cells]


def sparkline(values: Sequence[float | None], threshold: float | None = None) -> Text:
    """One character per value: ▁ (0) to █ (1), a blank where there was no score, red where
    the score reached the threshold."""
    text = Text()
    run, run_style = [], None
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            char, style = " ", None
        else:
            v = min(max(v, 0.0), 1.0)
            char = SPARK[min(len(SPARK) - 1, int(v * len(SPARK)))]
            style = HOT_STYLE if threshold is not None and v >= threshold else "cyan"
        if style != run_style and run:
            text.append("".join(run), run_style)
            run = []
        run.append(char)
        run_style = style
    if run:
        text.append("".join(run), run_style)
    return text


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_coarse(seconds: float) -> str:
    """A countdown in its largest unit, rounded up, to fit a narrow column: `7s`, `10m`, `2h`."""
    s = math.ceil(max(0.0, seconds))
    for unit, size in (("h", 3600), ("m", 60)):
        if s >= size:
            return f"{math.ceil(s / size)}{unit}"
    return f"{s}s"


def fmt_span(seconds: float) -> str:
    """The sparkline's window for its column title: `5 min`, `90 s`, `2 h`."""
    s = int(seconds)
    if s % 3600 == 0 and s >= 3600:
        return f"{s // 3600} h"
    return f"{s // 60} min" if s % 60 == 0 and s >= 60 else f"{s} s"


def fmt_clock(iso: str | None, today: datetime | None = None) -> str:
    """ISO 8601 UTC from a message -> the viewer's local time (date added when not today)."""
    if not iso:
        return "–"
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return redact(iso)[:19]
    today = today or datetime.now().astimezone()
    return when.strftime("%H:%M:%S" if when.date() == today.date() else "%m-%d %H:%M")


def _num(value: float | None, fmt: str) -> Text:
    return Text("–", style="dim") if value is None else Text(format(value, fmt))


def _short_provider(name: str) -> str:
    return name.removesuffix("ExecutionProvider") or name


def _left_ellipsis(text: str, width: int) -> str:
    """Keep the end of a path (the file name) when it does not fit."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def camera_sort_key(cam: CameraView):
    """In alert first (highest score on top), then cameras with trouble, then the rest by name."""
    trouble = cam.state != "streaming" or cam.quiet_for_s is not None
    return (not cam.in_alert, -(cam.score or 0.0) if cam.in_alert else 0.0, not trouble,
            cam.monitor, cam.name)


def state_text(cam: CameraView) -> Text:
    if cam.quiet_for_s is not None:
        return Text(f"stale {fmt_duration(cam.quiet_for_s)}", style="bold yellow")
    if cam.state == "streaming" and not cam.in_alert and cam.cooldown_s > 0:
        # Scoring, but no new alert may start yet: say so rather than pass for armed.
        return Text(f"cooldown {fmt_coarse(cam.cooldown_s)}", style=COOLDOWN_STYLE)
    return Text(cam.state or "?", style=STATE_STYLES.get(cam.state, ""))


def alert_text(cam: CameraView) -> Text:
    if cam.in_alert:
        return Text(f"ALERT {fmt_duration(cam.alert_for_s)}", style="bold white on red")
    lv = cam.levels
    if lv is not None and lv.source == "learning":   # it cannot alert yet: say so
        done = min(1.0, (lv.footage_s or 0.0) / lv.learn_s) if lv.learn_s else 0.0
        return Text(f"learning {done:.0%}", style="cyan")
    return Text("ok", style="dim green")


def levels_text(cam: CameraView) -> Text:
    """The on level and where it comes from: `0.105 1/d·10m` (calibrated for 1 false alert a
    day from 10 minutes of footage), `0.501 bundle`, `0.600 config`, `learn 4m/10m`."""
    lv = cam.levels
    if lv is None:
        return Text("" if cam.threshold is None else f"{cam.threshold:.3f}", style="dim")
    if lv.source == "learning":
        return Text(f"learn {fmt_coarse(lv.footage_s or 0.0)}/{fmt_coarse(lv.learn_s or 0.0)}", style="cyan")
    level = "–" if cam.threshold is None else f"{cam.threshold:.3f}"
    if lv.source == "calibrated":
        target = "?" if lv.target_per_day is None else f"{lv.target_per_day:g}/d"
        return Text.assemble(level, " ", (f"{target}·{fmt_coarse(lv.footage_s or 0.0)}", "green"))
    return Text.assemble(level, " ", (lv.source, "dim"))


class _Columns:
    """Which camera-table columns fit in `width`, and how wide each is. Columns give way in
    this order as the terminal narrows: monitor, rates, sparkline, then the name shrinks."""
    STATE, SCORE_NUM, ALERT, COUNT = 12, 6, 12, 6
    RATES = 5 + 6 + 6 + 3 * GAP
    LEVELS = 15

    def __init__(self, width: int, cameras: Sequence[CameraView], multi_monitor: bool):
        names = [len(redact(c.name)) for c in cameras] or [6]
        self.name = min(24, max(6, max(names)))
        base = self.STATE + self.SCORE_NUM + self.ALERT + self.COUNT + 4 * GAP
        rest = width - base - self.name
        if rest < 3:  # a very narrow terminal: the name gives way first
            self.name = max(4, self.name - (3 - rest))
            rest = width - base - self.name
        self.bar = max(3, min(8, rest))
        rest -= self.bar
        self.monitor = 0
        if multi_monitor:
            mon = min(16, max(7, max(len(redact(c.monitor)) for c in cameras)))
            if rest >= mon + GAP + self.RATES + 12:
                self.monitor = mon
                rest -= mon + GAP
        self.rates = rest >= self.RATES + 12
        if self.rates:
            rest -= self.RATES
        self.levels = self.LEVELS if rest >= self.LEVELS + GAP + 12 else 0
        rest -= self.levels + GAP if self.levels else 0
        self.spark = rest - GAP if rest >= 10 else 0
        if self.spark:
            grow = min(16, max(0, (self.spark - 20) // 2))  # a wide terminal: a finer bar too
            self.bar += grow
            self.spark = min(90, self.spark - grow)


class _Grid:
    """Fixed-width columns laid out by hand: each row is one Text line.

    rich's Table measures and pads every cell on every frame; a dashboard redrawn four times a
    second inside the monitor cannot afford that, and the widths are known anyway."""

    def __init__(self, columns: Sequence[tuple[str, int, str]]):
        self.columns = [(title, width, justify) for title, width, justify in columns if width > 0]
        self.width = sum(w for _, w, _ in self.columns) + GAP * (len(self.columns) - 1)

    def line(self, cells: Sequence[Text | str], style: str = "") -> Text:
        out = Text(style=style, no_wrap=True, overflow="crop", end="")
        for i, (cell, (_, width, justify)) in enumerate(zip(cells, self.columns)):
            if i:
                out.append(" " * GAP)
            cell = Text(cell) if isinstance(cell, str) else cell.copy()
            if cell.cell_len > width:
                cell.truncate(width, overflow="ellipsis")
            pad = " " * (width - cell.cell_len)
            if justify == "right":
                out.append(pad)
                out.append_text(cell)
            else:
                out.append_text(cell)
                out.append(pad)
        return out

    def head(self) -> list[Text]:
        return [self.line([Text(title, style="bold") for title, _, _ in self.columns]),
                Text("─" * self.width, style="grey37", no_wrap=True, overflow="crop", end="")]


def camera_grid(cameras: Sequence[CameraView], width: int, history_s: float = 300.0) -> tuple[_Grid, _Columns]:
    cols = _Columns(width, cameras, len({c.monitor for c in cameras}) > 1)
    rates = 1 if cols.rates else 0
    return _Grid([("monitor", cols.monitor, "left"), ("camera", cols.name, "left"),
                  ("state", cols.STATE, "left"), ("fps", 5 * rates, "right"), ("snip/s", 6 * rates, "right"),
                  ("lat ms", 6 * rates, "right"), ("score", cols.SCORE_NUM + cols.bar, "left"),
                  (f"last {fmt_span(history_s)}", cols.spark, "left"), ("alert", cols.ALERT, "left"),
                  ("alerts", cols.COUNT, "right"), ("levels", cols.levels, "left")]), cols


def camera_row(cam: CameraView, grid: _Grid, cols: _Columns, history_s: float = 300.0) -> Text:
    stale = cam.quiet_for_s is not None
    cells: list[Text | str] = []
    if cols.monitor:
        cells.append(Text(redact(cam.monitor), style="dim"))
    cells += [Text(redact(cam.name), style="bold"), state_text(cam)]
    if cols.rates:
        cells += [_num(cam.input_fps, ".1f"), _num(cam.snippets_per_s, ".2f"), _num(cam.latency_ms, ".0f")]
    cells.append(Text.assemble(score_text(cam.score, cam.threshold), " ",
                               score_bar(cam.score, cam.threshold, cols.bar)))
    if cols.spark:
        cells.append(sparkline(history_cells(cam.history, history_s, cols.spark), cam.threshold))
    cells += [alert_text(cam), str(cam.alerts)]
    if cols.levels:
        cells.append(levels_text(cam))
    # Alert rows stand out; stale rows are dimmed so old numbers do not pass for live ones.
    return grid.line(cells, style=ALERT_ROW_STYLE if cam.in_alert and not stale else ("dim" if stale else ""))


def camera_table(cameras: Sequence[CameraView], width: int, *, max_rows: int | None = None,
                 history_s: float = 300.0) -> list[Text]:
    """Title lines and a line per camera, sorted by `camera_sort_key`; cameras beyond
    `max_rows` are summed up in a last line (alerts sort to the top, so none is hidden)."""
    cams = sorted(cameras, key=camera_sort_key)
    grid, cols = camera_grid(cams, width, history_s)
    lines = grid.head()
    shown = cams if max_rows is None or len(cams) <= max_rows else cams[:max(0, max_rows - 1)]
    lines += [camera_row(cam, grid, cols, history_s) for cam in shown]
    hidden = cams[len(shown):]
    if hidden:
        n_alert = sum(c.in_alert for c in hidden)
        more = f"… {len(hidden)} more camera{'s' if len(hidden) > 1 else ''}"
        if n_alert:
            more += f" ({n_alert} in alert)"
        lines.append(Text(more, style="dim italic", no_wrap=True, overflow="crop", end=""))
    return lines


def header(snap: DashboardSnapshot, width: int) -> list[Text]:
    """Model, providers, uptime, cameras up/total, alerts today, dropped/lost messages."""
    models = sorted({(m.model, m.stage) for m in snap.monitors if m.model})
    model = ", ".join(f"{name} (stage {stage})" if stage is not None else name for name, stage in models) or "–"
    providers = []
    for m in snap.monitors:
        for p in m.providers:
            if _short_provider(p) not in providers:
                providers.append(_short_provider(p))
    uptimes = [m.uptime_s for m in snap.monitors if m.uptime_s is not None]
    clock = datetime.fromtimestamp(snap.wall_time).strftime("%H:%M:%S")
    line1 = Text.assemble(
        (" SSRL monitor ", "bold white on blue"), "  model ", (redact(model), "bold"),
        "  providers ", (", ".join(providers) or "–", "bold"),
        "  up ", (fmt_duration(max(uptimes)) if uptimes else "–", "bold"))
    if len(snap.monitors) > 1:
        line1.append_text(Text.assemble("  monitors ", (str(len(snap.monitors)), "bold")))
    line1.append(f"  {clock}", style="dim")
    up = sum(1 for c in snap.cameras if c.state == "streaming" and c.quiet_for_s is None)
    total = len(snap.cameras)
    dropped = sum(m.dropped_messages for m in snap.monitors)
    lost = sum(m.lost_messages for m in snap.monitors)
    line2 = Text.assemble(
        "cameras ", (f"{up}/{total} up", "bold green" if up == total and total else "bold yellow"),
        "  alerts today ", (str(sum(m.alerts_today for m in snap.monitors)), "bold"),
        "  dropped ", (str(dropped), "bold red" if dropped else "bold"),
        "  lost ", (str(lost), "bold red" if lost else "bold"))
    if snap.malformed:
        line2.append_text(Text.assemble("  malformed ", (str(snap.malformed), "bold red")))
    if snap.feed:
        line2.append_text(Text.assemble("  feed ", (redact(snap.feed), "dim")))
    parts = [_fit(line1, width), _fit(line2, width)]
    for m in snap.monitors:
        if m.warning:   # e.g. a model trained on synthetic footage watching real cameras
            who = f"{redact(m.monitor)}: " if len(snap.monitors) > 1 else ""
            parts.append(_fit(Text(f" ⚠ {who}{redact(m.warning)} ", style=WARNING_STYLE), width))
    banner = feed_banner(snap, width)
    if banner is not None:
        parts.append(banner)
    parts += fault_lines(snap, width)
    return parts


def fault_lines(snap: DashboardSnapshot, width: int = 200) -> list[Text]:
    """A line per fault a monitor reports in its status (e.g. its event store cannot be
    written), until a status reports it gone."""
    several = len(snap.monitors) > 1
    lines = []
    for m in snap.monitors:
        for kind, message in m.faults:
            who = f"{redact(m.monitor)}: " if several else ""
            lines.append(_fit(Text(f" FAULT {who}{redact(kind)}: {redact(message)} ", style="bold white on red"), width))
    return lines


def feed_banner(snap: DashboardSnapshot, width: int = 200) -> Text | None:
    """Says out loud when the numbers on screen are not live."""
    if snap.waiting:
        text = Text(f" waiting for messages{' on ' + redact(snap.feed) if snap.feed else ''} … ",
                    style="bold black on yellow")
    elif snap.feed_quiet_for_s is not None:
        text = Text(f" FEED QUIET: nothing received for {fmt_duration(snap.feed_quiet_for_s)}; "
                    "the numbers below are the last known, not live ", style="bold black on yellow")
    else:
        quiet = [m for m in snap.monitors if m.quiet_for_s is not None]
        if not quiet:
            return None
        names = ", ".join(f"{redact(m.monitor) or '?'} ({fmt_duration(m.quiet_for_s)})" for m in quiet)
        text = Text(f" quiet monitors: {names}; their cameras are stale ", style="bold black on yellow")
    return _fit(text, width)


def _fit(text: Text, width: int) -> Text:
    """One screen line: never wrapped, cut with an ellipsis at `width` cells."""
    text.no_wrap, text.overflow, text.end = True, "ellipsis", ""
    text.truncate(width, overflow="ellipsis")
    return text


MARK_HELP = "↑/↓ select, f: false alarm, t: real"
SELECTED_STYLE = "reverse"


def alerts_panel(alerts: Sequence[AlertView], width: int, max_rows: int = 8, *, notice: str = "",
                 can_mark: bool = False) -> list[Text]:
    """Recent alerts, newest first: time, camera, peak score, duration, snapshot path; where
    the operator can mark alerts, a cursor, the verdicts given and the answer to the last key."""
    title = Text.assemble(("recent alerts", "bold"), (f"  ({len(alerts)})" if alerts else "  none yet", "dim"),
                          no_wrap=True, overflow="crop", end="")
    if can_mark and alerts:
        title.append(f"   {MARK_HELP}", style="dim")
    if notice:
        title.append(f"   {redact(notice)}", style="bold")
    title = _fit(title, width)
    if not alerts or max_rows <= 0:
        return [title]
    marking = can_mark or any(a.verdict for a in alerts)
    verdict_w = 7 if marking else 0
    cam_w = min(24, max(6, max(len(redact(a.camera)) for a in alerts)))
    snap_w = max(8, width - 11 - cam_w - 6 - 16 - 4 * GAP - (verdict_w + GAP if marking else 0))
    grid = _Grid([("time", 11, "left"), ("camera", cam_w, "left"), ("peak", 6, "right"),
                  ("duration", 16, "left"), ("verdict", verdict_w, "left"), ("snapshot", snap_w, "left")])
    today = datetime.now().astimezone()
    lines = [title, *grid.head()]
    # The cursor stays in view: the rows shown end at the selected alert when it is further down.
    chosen = next((i for i, a in enumerate(alerts) if a.selected), 0)
    first = max(0, chosen - max_rows + 1)
    for a in alerts[first:first + max_rows]:
        duration = (Text(f"● live {fmt_duration(a.duration_s)}", style="bold red") if a.active
                    else Text(fmt_duration(a.duration_s) + (f" ({a.reason})" if a.reason else "")))
        cells = [fmt_clock(a.started, today), Text(redact(a.camera), style="bold red" if a.active else ""),
                 score_text(a.peak, a.threshold), duration]
        if marking:
            cells.append(Text(a.verdict or "–", style="bold" if a.verdict == "false" else "dim"))
        cells.append(Text(_left_ellipsis(redact(a.snapshot), snap_w) if a.snapshot else "–", style="dim"))
        lines.append(grid.line(cells, style=SELECTED_STYLE if a.selected else ""))
    return lines


def render_dashboard(snap: DashboardSnapshot, width: int, height: int | None = None) -> Text:
    """The whole screen as one Text, fitted to width x height: header, cameras, recent alerts."""
    width = max(20, int(width))
    top = header(snap, width)
    if height is None:
        cams = camera_table(snap.cameras, width, history_s=snap.history_s)
        alerts = alerts_panel(snap.alerts, width, notice=snap.notice, can_mark=snap.can_mark)
    else:
        # Lines: header, blank, camera titles (2), camera rows, blank, alerts title + titles (3), alert rows.
        room = max(0, height - len(top) - 1 - 2 - 1 - 3)
        alert_rows = min(len(snap.alerts), max(2, room // 3), 12)
        camera_rows = max(1, room - alert_rows)
        if len(snap.cameras) < camera_rows:
            alert_rows = min(len(snap.alerts), room - len(snap.cameras), 12)
        cams = camera_table(snap.cameras, width, max_rows=camera_rows, history_s=snap.history_s)
        alerts = alerts_panel(snap.alerts, width, max(0, alert_rows), notice=snap.notice, can_mark=snap.can_mark)
    blank = Text("", end="")
    screen = Text("\n", no_wrap=True, overflow="crop", end="").join([*top, blank, *cams, blank, *alerts])
    screen.end = "\n"
    return screen


class DashboardView:
    """A renderable that fits itself to whatever size the terminal has at draw time, which
    is what makes the live view survive resizes."""

    def __init__(self, snap: DashboardSnapshot):
        self.snap = snap

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield render_dashboard(self.snap, options.max_width, options.height or console.height)
