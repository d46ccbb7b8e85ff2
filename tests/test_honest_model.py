"""Honest models and an honest dashboard (issue 13 §4): a bundle trained on synthetic footage
only says so, once at start, in the status messages and on the dashboard, when it watches
anything but the synthetic camera; a camera in cooldown shows as such; `f` on the selected
alert marks it false in the monitor's store; the terminal keeps a summary after the dashboard. Real subprocesses, real sockets, a real terminal (tmux)."""
from __future__ import annotations

import json
import re
import shutil
import sys

import pytest

from export.__main__ import main as export_main
from monitor.config import DEMO_BUNDLE
from monitor.dashboard.render import render_dashboard
from monitor.dashboard.state import DashboardState
from monitor.messages.event_store import EventStore
from monitor.model.bundle import Bundle
from monitor.model.manifest import BundleError, Manifest
from tests.factories import cached_bundle, dark_bright_dark
from tests.head_helpers import seeded_model
from tests.live_helpers import ROOT, Subscriber, endpoint, monitor
from tests.test_dashboard_terminal import EXITED, Tmux, row
from training.checkpoint import save_checkpoint

WARNING = "trained on synthetic footage only"


def synthetic_copy(tmp_path):
    """The brightness test bundle, its manifest saying it learnt from synthetic footage only."""
    bundle = tmp_path / "synthetic-bundle"
    shutil.copytree(cached_bundle(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["training_data"] = "synthetic"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_the_demo_bundle_and_the_exporter_record_the_training_data(tmp_path):
    assert Bundle(DEMO_BUNDLE, providers=["cpu"]).manifest.synthetic_only   # its graphs' SHA-256 still hold
    save_checkpoint(seeded_model(2, feature_size=64), tmp_path / "ckpt.pkl")
    for extra, expected in (([], ""), (["--training-data", "ShanghaiTech"], "ShanghaiTech")):
        out = tmp_path / f"bundle{len(extra)}"
        assert export_main(["--checkpoint", str(tmp_path / "ckpt.pkl"), "--out", str(out), *extra]) == 0
        assert Manifest.read(out).training_data == expected and not Manifest.read(out).synthetic_only
        assert ("training_data" in json.loads((out / "manifest.json").read_text())) == bool(expected)
    data = json.loads((out / "manifest.json").read_text())
    data["training_data"] = 3
    with pytest.raises(BundleError, match="field 'training_data' must be str"):
        Manifest.from_dict(data)


def _first_status(tmp_path, name: str, *args: str):
    ep = endpoint()
    sub = Subscriber(ep, topics=("status",))
    proc = monitor(tmp_path, "--no-dashboard", "--publish", ep, "--status-interval", "0.5",
                   "--events", str(tmp_path / f"{name}.db"), *args, name=name)
    try:
        status = sub.wait_for(lambda ms: sub.of("status") and sub.of("status")[-1], "a status message", process=proc)
    finally:
        code = proc.terminate()
        sub.close()
    assert code == 0, proc.stderr()
    return status, proc.stderr()


@pytest.mark.slow
def test_a_synthetic_only_model_warns_on_a_file_source_and_not_on_the_synthetic_camera(tmp_path):
    video = dark_bright_dark(tmp_path / "lobby.avi")
    status, stderr = _first_status(tmp_path, "file", "--source", f"lobby={video}", "--loop")
    assert status["model"]["training_data"] == "synthetic"
    assert WARNING in status["model"]["warning"] and "lobby" in status["model"]["warning"]
    assert len([line for line in stderr.splitlines() if WARNING in line]) == 1, stderr   # once, at start
    assert "WARNING" in next(line for line in stderr.splitlines() if WARNING in line)

    status, stderr = _first_status(tmp_path, "synthetic", "--source", "synthetic://")
    assert status["model"]["training_data"] == "synthetic" and status["model"]["warning"] is None
    assert WARNING not in stderr


def test_the_dashboard_shows_the_warning_and_a_camera_in_cooldown():
    state = DashboardState()
    base = {"schema": 1, "monitor": "box", "camera": None, "ts": "2026-12-01T10:00:00Z", "type": "status",
            "uptime_s": 5.0, "dropped_messages": 0, "alerts_today": 1,
            "model": {"name": "demo", "stage": 4, "providers": ["CPUExecutionProvider"],
                      "warning": "model demo was trained on synthetic footage only: ..."}}
    camera = {"camera": "door", "state": "streaming", "score": 0.1, "threshold": 0.5, "in_alert": False,
              "alerts": 1, "source": "door.avi"}
    assert state.feed("status", {**base, "seq": 0, "cameras": [{**camera, "cooldown_s": 7.2}]})
    screen = render_dashboard(state.snapshot(), 120, 30).plain
    assert "⚠ model demo was trained on synthetic footage only" in screen
    assert "cooldown 8s" in row(screen, "door")           # 7.2 s left, rounded up
    assert state.feed("status", {**base, "seq": 1, "cameras": [{**camera, "cooldown_s": 0}],
                                 "model": {**base["model"], "warning": None}})
    screen = render_dashboard(state.snapshot(), 120, 30).plain
    assert "streaming" in row(screen, "door") and "cooldown" not in screen and "⚠" not in screen


@pytest.mark.slow
def test_the_monitor_on_a_terminal_warns_shows_cooldown_marks_an_alert_and_leaves_a_summary(tmp_path):
    tmux = Tmux(width=150, height=30)
    video = dark_bright_dark(tmp_path / "door.avi", dark=32, bright=48, after=32)
    events = tmp_path / "events.db"
    config = tmp_path / "door.toml"
    config.write_text(f"""
[alerts]
on = 0.6
cooldown_s = 600.0
[[cameras]]
name = "door"
url = "{video}"
loop = true
""")
    try:
        tmux.start([sys.executable, str(ROOT / "run_monitor.py"), "--config", str(config),
                    "--model", str(synthetic_copy(tmp_path)), "--publish", endpoint(), "--status-interval", "0.5",
                    "--events", str(events), "--snapshots", str(tmp_path / "snaps"),
                    "--clips", str(tmp_path / "clips")])
        screen = tmux.wait_for("the warning in the header", lambda s: WARNING in s, timeout_s=120)
        assert "door" in next(line for line in screen.splitlines() if WARNING in line)
        screen = tmux.wait_for("the camera in cooldown after its alert",
                               lambda s: re.search(r"cooldown \d+m\b", row(s, "door") or ""), timeout_s=120)
        assert "recent alerts  (1)" in screen
        tmux.keys("Down")                                       # select the alert, mark it a false alarm
        tmux.keys("f")
        screen = tmux.wait_for("the verdict", lambda s: "marked false" in s, timeout_s=30)
        marked = next(line for line in screen.splitlines() if "marked false" in line)
        tmux.keys("q")
        screen = tmux.wait_for("the monitor to exit", lambda s: EXITED.search(s) is not None, timeout_s=60)
        assert EXITED.search(screen).group(1) == "0"
        assert "SSRL monitor" not in screen                     # the dashboard's screen is gone ...
        summary = next(line for line in screen.splitlines() if "summary:" in line)   # ... the summary stays
        assert "1 alert raised (door 1)" in summary
        # The paths are absolute and may wrap on the terminal; the pane holds them whole.
        joined = "".join(screen.split())
        assert f"eventsin{events}" in joined and f"snapshotsin{tmp_path / 'snaps'}" in joined
        assert f"clipsin{tmp_path / 'clips'}" in joined
        # The verdict is in the monitor's store, for the alert the screen named.
        store = EventStore(events)
        verdicts = [(v.alert_id, v.verdict) for v in store.verdicts()]
        store.close()
        assert len(verdicts) == 1 and verdicts[0][1] is False and f"{verdicts[0][0]} marked false" in marked
    finally:
        tmux.close()
