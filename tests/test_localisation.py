"""Where an alert is (issue 13 §2): box and heat from the patch grids, on real ONNX Runtime
sessions, real video files and a real monitor process publishing on loopback.

The spot bundle (tests/localisation_helpers.py) alerts on a bright spot through its 2 x 3
grid, so the right answer is known: the heat must sit on the spot's cell, and nowhere else."""
from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

from monitor.alerts.localisation import (AlertHeat, Heat, Localiser, SnippetContext, draw_overlay, grid_cells,
                                         hottest_box, overlap_matrix)
from monitor.alerts.policy import AlertPolicy, SnippetInfo
from monitor.config import AlertSettings, CameraConfig, Config
from monitor.messages.event_store import read_store
from monitor.model.bundle import Bundle
from monitor.video.preprocess import Geometry, Preprocessor
from tests.factories import cached_bundle
from tests.live_helpers import Subscriber, endpoint, monitor, score_to_the_end, write_config
from tests.localisation_helpers import overlaps, read_frames, spot_box, spot_bundle, spot_video

COMMON = ("--no-dashboard", "--status-interval", "0.5")


@pytest.fixture(scope="module")
def spot():
    return Bundle(spot_bundle(), providers=["cpu"])


def test_grid_cells_are_the_preprocessing_patches_normalised():
    geometry = Geometry(frame_size=(340, 256), grids=(23, 35, 47))
    for grid in geometry.grids:
        expected = [(left / 340, top / 256, right / 340, bottom / 256)
                    for top, bottom, left, right in geometry.patch_boxes(grid)]
        assert np.allclose(grid_cells((340, 256), grid), expected)
    fine, coarse = grid_cells((340, 256), 47), grid_cells((340, 256), 23)
    spread = overlap_matrix(fine, coarse)
    assert np.allclose(spread.sum(axis=1), 1.0)          # every fine cell is covered once by each grid
    assert spread[0, 0] == 1.0 and spread[0, 1:].sum() == 0  # the top-left cell lies in the top-left patch


def test_hottest_box_grows_from_the_hottest_cell_over_connected_hot_cells():
    cells = grid_cells((70, 40), 47)                     # 4 rows x 7 columns, 10 px each
    heat = np.zeros((4, 7))
    heat[1, 2], heat[1, 3], heat[2, 3] = 1.0, 0.6, 0.5   # one region ...
    heat[3, 6] = 0.9                                     # ... and a hot cell apart from it
    assert hottest_box(heat, cells) == pytest.approx([2 / 7, 0.25, 4 / 7, 0.75], abs=1e-4)
    assert hottest_box(np.zeros((4, 7)), cells) is None


def test_the_heat_sits_on_the_patch_that_raises_the_score(tmp_path, spot):
    geometry = Geometry.from_manifest(spot.manifest)
    pre = Preprocessor(geometry)
    localiser = Localiser(spot, geometry.frame_size)
    cells = [(1, 2), (0, 0), (1, 1)]
    frames = read_frames(spot_video(tmp_path / "spots.avi", [(16, c) for c in cells]))
    for k, cell in enumerate(cells):
        crop_clips, patch_clips = pre.snippet(np.stack(frames[16 * k:16 * (k + 1)]))
        crops, patches = spot.backbone(crop_clips), spot.backbone(patch_clips)
        window = spot.fuse(crops[None], patches[None])
        assert spot.scores(window[None])[0, 0] > 0.9
        heat = localiser.heat(SnippetContext(window, 0, crops, patches))
        assert heat.values.shape == (4, 7)               # the finest grid, 4 x 7
        truth = spot_box(*cell)
        hottest = np.unravel_index(np.argmax(heat.values), heat.values.shape)
        assert overlaps(heat.cells[hottest[0] * 7 + hottest[1]], truth), (cell, heat.values)
        # Nothing outside the spot's cell: the other patches do not move the score.
        outside = [v for v, box in zip(heat.values.ravel(), heat.cells) if not overlaps(box, truth)]
        assert max(outside) < 1e-3, (cell, heat.values)
        # The box is the spot's cell, give or take the fine cells that straddle its edges.
        x0, y0, x1, y1 = heat.box
        assert overlaps(heat.box, truth), (cell, heat.box)
        assert truth[0] - 1 / 7 <= x0 and x1 <= truth[2] + 1 / 7 and truth[1] - 1 / 4 <= y0 and y1 <= truth[3] + 1 / 4
    assert localiser.calls == len(cells)


def test_a_stage_1_bundle_has_no_box_and_no_heat():
    bundle = Bundle(cached_bundle(stage=1), providers=["cpu"])
    assert not Localiser(bundle, (96, 72)).available
    policy = AlertPolicy("door", AlertSettings().resolved(0.5, 1), {"name": "m", "stage": 1})
    info = SnippetInfo(0, 0, 15, 0.0, 0.6)
    _, events = policy.update(info, 0.9)                 # no locator: the engine passes none for stage 1
    assert events[0]["event"] == "start" and events[0]["box"] is None and events[0]["heat"] is None
    assert AlertHeat().fields() == {"box": None, "heat": None}


def test_the_overlay_tints_the_hot_cells_and_draws_the_box():
    image = np.full((72, 96, 3), 90, np.uint8)
    values = np.zeros((4, 7))
    values[3, 6] = 1.0
    out = draw_overlay(image, Heat(values, grid_cells((96, 72), 47)))
    assert out is not image and (image == 90).all()      # a copy; the frame itself is untouched
    hot, cold = out[60, 90].astype(int), out[10, 10].astype(int)
    assert hot[2] - hot[0] > 60 and (cold == 90).all()   # red where hot, nothing elsewhere
    assert (out[54, 82:] != 90).any()                    # the box's edge along the cell's top
    assert draw_overlay(image, None) is image


@pytest.mark.slow
def test_alerts_of_a_real_run_carry_box_and_heat_where_the_spot_is(tmp_path):
    # Two spots in two places, 48 frames each, with dark video around them: two alerts.
    first, second = (0, 0), (1, 2)
    video = spot_video(tmp_path / "door.avi", [(48, None), (48, first), (64, None), (48, second), (48, None)])
    ep = endpoint()
    config = write_config(tmp_path / "spot.toml", f"""
[model]
path = "{spot_bundle()}"
[publish]
endpoint = "{ep}"
[log]
events = "{tmp_path / 'events.db'}"
snapshots = "{tmp_path / 'snaps'}"
[alerts]
cooldown_s = 0.0
[engine]
max_pending = 64   # paced past real time: a stall of a loaded machine must not drop a snippet asserted on
[[cameras]]
name = "door"
url = "{video}"
pace = true
fps = 100
""")
    sub = Subscriber(ep, topics=("alert.",))
    proc = monitor(tmp_path, "--config", str(config), *COMMON)
    try:
        sub.wait_for(lambda ms: len(sub.of("alert.")) >= 4, "two alerts, start and end", process=proc)
        assert proc.wait() == 0, proc.stderr()
    finally:
        proc.kill()
        sub.close()
    alerts = sub.of("alert.")
    assert [a["event"] for a in alerts] == ["start", "end", "start", "end"], alerts
    frames = read_frames(video)
    for (start, end), cell in zip((alerts[0:2], alerts[2:4]), (first, second)):
        truth, other = spot_box(*cell), spot_box(*(second if cell == first else first))
        for message in (start, end):
            heat = np.array(message["heat"])
            assert heat.shape == (4, 7) and (heat >= 0).all() and heat.max() > 0.5
            x0, y0, x1, y1 = box = message["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert overlaps(box, truth) and not overlaps(box, other), (cell, box)
        # The snapshot shows its first snippet's middle frame with the hot cells tinted red.
        shot = cv2.imread(start["snapshot"]).astype(int)
        plain = frames[start["frames"][0] + 8].astype(int)
        h, w = plain.shape[:2]
        inside = (slice(int(y0 * h) + 3, int(y1 * h) - 3), slice(int(x0 * w) + 3, int(x1 * w) - 3))
        redder = (shot[..., 2] - shot[..., 0]) - (plain[..., 2] - plain[..., 0])
        assert redder[inside].mean() > 40                # tinted inside the box
        far = (slice(0, h), slice(0, w // 3)) if cell == second else (slice(0, h), slice(2 * w // 3, w))
        assert abs(redder[far].mean()) < 10              # and not far from it
    logged = read_store(tmp_path / "events.db")
    assert [e["box"] for e in logged] == [a["box"] for a in alerts]   # the event store holds them too


def _run_engine(config: Config, bundle_path, timeout: float = 120.0):
    """The engine in this process on a real publisher; -> (engine, alert messages)."""
    from monitor.engine import Engine
    from monitor.messages.publisher import Publisher
    bundle = Bundle(bundle_path, providers=["cpu"])
    publisher = Publisher(endpoint(), "test-where")
    alerts, lock = [], threading.Lock()

    def listen(topic, message):
        if topic.startswith("alert."):
            with lock:
                alerts.append(message)

    publisher.add_listener(listen)
    engine = Engine(config, bundle, publisher)
    score_to_the_end(engine, publisher, timeout, "the file")
    return engine, alerts


@pytest.mark.slow
def test_heat_is_computed_only_for_the_snippets_of_an_alert(tmp_path):
    video = spot_video(tmp_path / "door.avi", [(64, None), (48, (0, 1)), (96, None)])
    config = Config()
    config.alerts = AlertSettings(min_snippets=2)
    config.cameras = [CameraConfig(url=str(video), name="door")]
    engine, alerts = _run_engine(config, spot_bundle())
    assert [a["event"] for a in alerts] == ["start", "end"]
    start, end = alerts
    # The spot is snippets 4-6; the run of 2 starts the alert at 5, 6 extends it, 7 ends it.
    assert start["snippets"] == [4, 5] and end["snippets"] == [4, 6]
    assert engine.snippets_scored == 13
    assert engine.localiser.calls == 3                   # snippets 4, 5 and 6; none of the other ten
    assert overlaps(start["box"], spot_box(0, 1)) and overlaps(end["box"], spot_box(0, 1))


@pytest.mark.slow
def test_the_demo_bundle_points_at_an_injected_anomaly_of_the_synthetic_camera(tmp_path):
    from monitor.config import DEMO_BUNDLE
    from monitor.video.synthetic import record

    # A fire 5 s in (seed and kind chosen among seeds the demo recipe never uses).
    url = "synthetic://?seed=900100000&rate=4&first=5&kinds=fire&realtime=0"
    video, _, events_file = record(url, tmp_path / "yard.mp4", 16)
    truth = json.loads(events_file.read_text())
    config = Config()
    config.cameras = [CameraConfig(url=str(video), name="yard")]
    _, alerts = _run_engine(config, DEMO_BUNDLE)
    start = next(a for a in alerts if a["event"] == "start")
    w, h = truth["frame_size"]
    first, last = start["frames"]
    boxes = [b["box"] for i in range(first, last + 1) for b in truth["boxes"].get(str(i), []) if b["anomalous"]]
    assert boxes, "the alert should cover the fire's frames"
    assert any(overlaps(start["box"], (x0 / w, y0 / h, x1 / w, y1 / h)) for x0, y0, x1, y1 in boxes), \
        (start["box"], boxes[:3])
