"""The dashboard's rendering functions, judged by what they draw (rich rendered to a string)."""
import io
from datetime import datetime, timezone

import pytest
from rich.console import Console
from rich.text import Text

from monitor.dashboard.render import (ALERT_ROW_STYLE, SPARK, alerts_panel, camera_table, fmt_clock, fmt_duration, header,
                                      history_cells, redact, render_dashboard, score_bar, sparkline)
from monitor.dashboard.state import AlertView, CameraView, DashboardSnapshot, MonitorView


def draw(renderable, width=120, height=None) -> str:
    if isinstance(renderable, list):   # lines of Text
        renderable = Text("\n").join(renderable)
    console = Console(file=io.StringIO(), width=width, height=height or 50, record=True,
                      color_system="truecolor", legacy_windows=False)
    console.print(renderable)
    return console.export_text()


def cell_styles(text):
    """The style name of every character of a rich Text built with append(char, style)."""
    out = [str(text.style)] * len(text.plain)
    for span in text.spans:
        for i in range(span.start, span.end):
            out[i] = str(span.style)
    return out


def camera(name, score=0.2, threshold=0.6, in_alert=False, state="streaming", monitor="box-1",
           history=(), quiet=None, alerts=0, alert_for=None):
    return CameraView((monitor, name), name, monitor, state, f"synthetic://{name}", "", 25.0, 1.56, 83.0, 0, 0,
                      score, threshold, in_alert, alert_for if in_alert else None, alerts, tuple(history), quiet)


def alert(alert_id, camera_name, peak=0.91, active=True, duration=12.0, snapshot=None,
          started="2026-11-24T20:01:02.345Z", reason=""):
    return AlertView(alert_id, "box-1", camera_name, started, None if active else started, peak, 0.6, duration,
                     snapshot, active, reason)


def snapshot(cameras=(), alerts=(), quiet=None, waiting=False, monitors=None, **kw):
    monitors = monitors or (MonitorView("box-1", "ssrl-ucf", 3, ("CUDAExecutionProvider", "CPUExecutionProvider"),
                                        3723.0, 2, 5, 4, None),)
    return DashboardSnapshot(tuple(monitors), tuple(cameras), tuple(alerts), 100, 0, "",
                             "tcp://10.0.0.9:5556", quiet, waiting, 5.0, 300.0, 1_790_000_000.0)


# -- score bar --------------------------------------------------------------------------------

def test_score_bar_fills_to_the_score_and_marks_the_threshold():
    bar = score_bar(0.25, 0.6, 20)
    assert bar.plain == "█████" + "─" * 7 + "┃" + "─" * 7      # 5 of 20 cells, marker at cell 12
    styles = cell_styles(bar)
    assert set(styles[:5]) == {"green"}


def test_score_bar_colour_turns_yellow_near_and_red_at_the_threshold():
    near, hot = score_bar(0.5, 0.6, 20), score_bar(0.9, 0.6, 20)
    assert set(cell_styles(near)[:10]) == {"yellow"}
    assert hot.plain == "█" * 18 + "──" and "┃" not in hot.plain   # past the marker: all red
    assert set(cell_styles(hot)[:18]) == {"bold red"}
    assert set(cell_styles(score_bar(0.6, 0.6, 20))[:12]) == {"bold red"}   # at the threshold is an alert level


def test_score_bar_partial_cells_and_limits():
    assert score_bar(0.5 + 1 / 80, 0.9, 10).plain.startswith("█████▏─")   # 41 eighths of a cell
    assert score_bar(0.5 + 3 / 80, 0.9, 10).plain.startswith("█████▍─")   # 43
    assert score_bar(0.0, 0.6, 10).plain == "──────┃───"
    assert score_bar(1.7, 0.6, 10).plain == "█" * 10                        # clamped
    assert score_bar(None, 0.6, 6).plain == "······"
    assert "┃" not in score_bar(0.3, None, 10).plain                         # no threshold, no marker
    assert len(score_bar(0.4, 0.99, 7).plain) == 7


# -- sparkline ---------------------------------------------------------------------------------

def test_sparkline_levels_gaps_and_threshold_colour():
    line = sparkline([0.0, 0.5, 1.0, None, 0.7], threshold=0.6)
    assert line.plain == f"{SPARK[0]}{SPARK[4]}{SPARK[-1]} {SPARK[5]}"
    styles = cell_styles(line)
    assert styles[0] == styles[1] == "cyan" and styles[2] == styles[4] == "bold red"


def test_history_cells_bucket_by_age_newest_right_and_keep_the_peak():
    points = [(299.0, 0.1), (160.0, 0.2), (150.5, 0.9), (155.0, 0.3), (1.0, 0.4), (0.5, 0.3), (400.0, 1.0)]
    cells = history_cells(points, 300.0, 10)      # 30 s per cell; 400 s is out of the window
    assert cells == [0.1, None, None, None, 0.9, None, None, None, None, 0.4]


# -- camera rows -------------------------------------------------------------------------------

def test_camera_rows_show_every_field():
    text = draw(camera_table([camera("dock-gate", score=0.42, alerts=3,
                                     history=[(10.0, 0.2), (5.0, 0.42)])], width=140), width=140)
    row = next(line for line in text.splitlines() if "dock-gate" in line)
    for expected in ("streaming", "25.0", "1.56", "83", "0.420", "█", "ok", " 3"):
        assert expected in row, expected
    header_line = text.splitlines()[0]
    for title in ("camera", "state", "fps", "snip/s", "lat ms", "score", "last 5 min", "alert", "alerts"):
        assert title in header_line


def test_cameras_in_alert_sort_to_the_top_and_stand_out():
    cams = [camera("aaa-quiet"), camera("bbb-down", state="reconnecting", score=None),
            camera("zzz-hot", score=0.93, in_alert=True, alert_for=75.0, alerts=2),
            camera("yyy-hotter", score=0.97, in_alert=True, alert_for=5.0)]
    table = camera_table(cams, width=140)
    lines = [line for line in draw(table, width=140).splitlines() if line.strip()][2:]
    styles = [str(line.style) for line in table[2:]]
    assert [line.split()[0] for line in lines] == ["yyy-hotter", "zzz-hot", "bbb-down", "aaa-quiet"]
    assert "ALERT 1m15s" in lines[1] and "ALERT" not in lines[3]
    assert styles[0] == styles[1] == ALERT_ROW_STYLE and styles[2] == styles[3] == ""   # alert rows stand out


def test_stale_camera_says_so():
    text = draw(camera_table([camera("lobby", quiet=12.0)], width=120))
    assert "stale 12s" in text and "streaming" not in text


def test_many_cameras_fold_into_a_count_and_keep_alerts_visible():
    cams = [camera(f"cam-{i:02d}") for i in range(30)] + [camera("zz-last", score=0.8, in_alert=True)]
    text = draw(camera_table(cams, width=120, max_rows=6))
    names = [line.split()[0] for line in text.splitlines()[2:] if line.strip()]
    assert names[0] == "zz-last" and len(names) == 6
    assert "… 26 more cameras" in text


@pytest.mark.parametrize("width", [50, 72, 80, 100, 132, 200])
def test_rows_fit_any_width(width):
    cams = [camera("a-rather-long-camera-name-indeed", score=0.7, in_alert=True, alert_for=3725.0,
                   history=[(i, i / 300) for i in range(300)]), camera("b")]
    text = draw(camera_table(cams, width=width), width=width)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    assert "0.700" in text and "ALERT" in text


# -- credentials -------------------------------------------------------------------------------

def test_credentials_never_reach_the_screen():
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/live?token=s3cret&ch=1") == \
        "rtsp://***@10.0.0.5:554/live?token=***&ch=1"
    assert redact("http://user@cam/x") == "http://***@cam/x"
    assert redact("synthetic://lobby") == "synthetic://lobby"
    leaky = camera("rtsp://admin:hunter2@10.0.0.5/live")
    snap = snapshot([leaky], [alert("a1", "rtsp://admin:hunter2@10.0.0.5/live", snapshot="/snaps/pw=hunter2.jpg")])
    text = draw(render_dashboard(snap, 160, 30), width=160, height=30)
    assert "hunter2" not in text and "admin" not in text
    assert "rtsp://***@10.0.0.5/live" in text


# -- header, alerts, whole screen --------------------------------------------------------------

def test_header_says_model_providers_uptime_cameras_alerts_and_losses():
    snap = snapshot([camera("a"), camera("b"), camera("c", state="stalled")])
    text = draw(header(snap, 160), width=160)
    for expected in ("ssrl-ucf (stage 3)", "CUDA, CPU", "up 1h02m", "cameras 2/3 up", "alerts today 4",
                     "dropped 2", "lost 5", "tcp://10.0.0.9:5556"):
        assert expected in text, expected
    assert "ExecutionProvider" not in text


def test_quiet_feed_and_waiting_banners():
    assert "FEED QUIET: nothing received for 12s" in draw(header(snapshot([camera("a", quiet=12.0)], quiet=12.3), 160), 160)
    assert "waiting for messages on tcp://10.0.0.9:5556" in draw(header(snapshot(waiting=True), 160), 160)
    assert "QUIET" not in draw(header(snapshot([camera("a")]), 160), 160)
    two = (MonitorView("box-1", "m", 3, (), 10.0, 0, 0, 0, None), MonitorView("box-2", "m", 3, (), 10.0, 0, 0, 0, 9.0))
    assert "quiet monitors: box-2 (9s)" in draw(header(snapshot(monitors=two), 160), 160)


def test_recent_alerts_panel():
    started = "2026-11-24T20:01:02.345Z"
    alerts = [alert("b-1", "lobby", peak=0.77, active=True, duration=8.0, snapshot="/var/snaps/lobby/b-1.jpg"),
              alert("a-1", "dock-gate", peak=0.95, active=False, duration=95.0, snapshot=None, reason="shutdown")]
    text = draw(alerts_panel(alerts, 120), width=120)
    lines = text.splitlines()
    assert "recent alerts" in lines[0] and "(2)" in lines[0]
    lobby = next(line for line in lines if "lobby" in line)
    dock = next(line for line in lines if "dock-gate" in line)
    assert lines.index(lobby) < lines.index(dock)                       # newest first
    assert "0.770" in lobby and "● live 8s" in lobby and "/var/snaps/lobby/b-1.jpg" in lobby
    assert "0.950" in dock and "1m35s (shutdown)" in dock and "live" not in dock
    assert fmt_clock(started) in lobby
    narrow = draw(alerts_panel([alert("x", "c", snapshot="/a/very/long/path/to/the/snapshots/x-0001.jpg")], 60), 60)
    assert "x-0001.jpg" in narrow and "…" in narrow                    # the file name survives
    assert "none yet" in draw(alerts_panel([], 80), 80)


def test_fmt_clock_is_local_time_and_fmt_duration():
    iso = "2026-11-24T20:01:02.345Z"
    local = datetime(2026, 11, 24, 20, 1, 2, tzinfo=timezone.utc).astimezone()
    assert fmt_clock(iso, today=local) == local.strftime("%H:%M:%S")
    assert fmt_clock(iso, today=local.replace(year=2027)) == local.strftime("%m-%d %H:%M")
    assert fmt_clock(None) == "–" and fmt_clock("garbage") == "garbage"
    assert [fmt_duration(s) for s in (0, 59.9, 60, 3599, 3600, 90000)] == ["0s", "59s", "1m00s", "59m59s", "1h00m", "1d01h"]


@pytest.mark.parametrize("width,height", [(80, 24), (120, 40), (200, 60), (60, 16)])
def test_whole_screen_fits_the_terminal(width, height):
    cams = [camera(f"cam-{i:02d}", history=[(5.0, 0.3)]) for i in range(40)] + [camera("hot", score=0.9, in_alert=True)]
    alerts = [alert(f"a{i}", f"cam-{i:02d}", active=False) for i in range(30)]
    text = draw(render_dashboard(snapshot(cams, alerts), width, height), width=width, height=height)
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= height
    assert max(len(line.rstrip()) for line in lines) <= width
    assert "SSRL monitor" in lines[0] and "hot" in text and "recent alerts" in text
