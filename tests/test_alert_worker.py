"""Alerts are located and published off the scoring thread (monitor/alerts/worker.py), on real
ONNX Runtime sessions of the spot bundle (tests/localisation_helpers.py: the right answer is
the spot's cell) and a real publisher.

- A worker that is behind locates every start, locates only the newest of the extensions that
  queued meanwhile, and publishes every event in order, with box and heat, once drained.
- In the live engine, a localisation that is slow (a spot bundle with wide features and a long
  window, so that locating one snippet costs about 50 windows' worth) and that, before its
  first graph run, waits until the other camera has had two more snippets scored, leaves that
  camera scoring: it is scored between the door's alert being decided and its located start
  being published, and every alert event still arrives in order with its box, heat, snapshot
  and clip. The wait makes the test independent of how fast the machine is; were locating done
  on the scoring thread, the wait would run out and the test fail."""
from __future__ import annotations

import functools
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.alerts.localisation import Localiser, SnippetContext
from monitor.alerts.worker import AlertWorker
from monitor.config import AlertSettings, CameraConfig, Config
from monitor.model.bundle import Bundle
from monitor.video.preprocess import Geometry, Preprocessor
from tests.factories import build_bundle
from tests.live_helpers import endpoint, score_to_the_end
from tests.localisation_helpers import overlaps, read_frames, spot_box, spot_bundle, spot_head, spot_video


def heat_on(heat: np.ndarray, cells: np.ndarray, box) -> float:
    """The heat of the fine cell at the centre of `box` (cells that straddle its edge share the
    heat of their neighbours)."""
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return next(v for v, (x0, y0, x1, y1) in zip(heat.ravel(), cells) if x0 <= x < x1 and y0 <= y < y1)


@pytest.fixture(scope="module")
def spot():
    return Bundle(spot_bundle(), providers=["cpu"])


def spot_contexts(tmp_path, spot, cells) -> tuple[list[np.ndarray], list[SnippetContext]]:
    """(frames, a SnippetContext per snippet) of a video with the spot in `cells`, one a snippet."""
    pre = Preprocessor(Geometry.from_manifest(spot.manifest))
    frames = read_frames(spot_video(tmp_path / "spots.avi", [(16, c) for c in cells]))
    contexts = []
    for k in range(len(cells)):
        crop_clips, patch_clips = pre.snippet(np.stack(frames[16 * k:16 * (k + 1)]))
        crops, patches = spot.backbone(crop_clips), spot.backbone(patch_clips)
        contexts.append(SnippetContext(spot.fuse(crops[None], patches[None]), 0, crops, patches))
    return frames, contexts


@pytest.mark.parametrize("share, located", [(1.0, 3), (1e-6, 2)], ids=["no rest", "resting"])
def test_extensions_take_their_share_of_the_worker_and_rest_after_it(tmp_path, spot, share, located):
    localiser = Localiser(spot, Geometry.from_manifest(spot.manifest).frame_size)
    frames, contexts = spot_contexts(tmp_path, spot, [(0, 1), (1, 0), (1, 1)])
    published = []
    worker = AlertWorker(localiser, lambda camera, event: published.append(event), extension_share=share)
    worker.start("door", {"event": "start", "alert_id": "door-1"}, contexts[:1], None)
    for ctx in contexts[1:]:  # one at a time, each once the worker is idle: none takes another's place
        worker.extend("door", ctx)
        deadline = time.monotonic() + 120
        while not worker.idle and time.monotonic() < deadline:
            time.sleep(0.01)
    worker.end("door", {"event": "end", "alert_id": "door-1"})
    assert worker.close(120)
    start, end = published
    # The first extension is located; after it, at a share of 1e-6, the next waits a
    # million times as long as it took, so it is skipped; at 1.0 it is located too.
    assert start["located"] == 1 and end["located"] == located and worker.skipped == 3 - located
    assert localiser.calls == located


def test_a_worker_that_is_behind_locates_each_start_skips_extensions_and_loses_no_event(tmp_path, spot):
    geometry = Geometry.from_manifest(spot.manifest)
    localiser = Localiser(spot, geometry.frame_size)
    # Snippets with the spot in a known cell: the door's run in (0, 1), then three extensions in
    # (1, 0), (1, 1) and (1, 2); one hall snippet in (0, 0).
    cells = [(0, 1), (0, 1), (1, 0), (1, 1), (1, 2), (0, 0)]
    frames, contexts = spot_contexts(tmp_path, spot, cells)
    published = []
    worker = AlertWorker(localiser, lambda camera, event: published.append((camera, event)), tmp_path / "snaps")
    running, release = threading.Event(), threading.Event()
    try:
        # The worker is busy (a job that waits for the test): what follows queues behind it.
        busy = worker.call(lambda: running.set() or release.wait())
        assert running.wait(60)
        worker.start("door", {"event": "start", "alert_id": "door-1"}, contexts[:2], frames[8])
        for ctx in contexts[2:5]:
            worker.extend("door", ctx)        # returns at once; each newer one takes the waiting one's place
        worker.start("hall", {"event": "start", "alert_id": "hall-1"}, contexts[5:], None)
        worker.end("door", {"event": "end", "alert_id": "door-1"})
        worker.end("hall", {"event": "end", "alert_id": "hall-1"})
        assert not published and worker.queued == 5 and worker.skipped == 2
    finally:
        release.set()
    assert worker.close(120)
    assert busy.result() is True
    assert [(c, e["event"]) for c, e in published] == [("door", "start"), ("hall", "start"), ("door", "end"),
                                                       ("hall", "end")]
    door_start, hall_start, door_end, hall_end = (e for _, e in published)
    assert localiser.calls == 4                            # the door's run (2), its newest extension, the hall's
    assert door_start["located"] == 2 and door_end["located"] == 3 and hall_end["located"] == 1
    cells_ = localiser.cells
    assert overlaps(door_start["box"], spot_box(0, 1)), door_start["box"]
    end_heat = np.array(door_end["heat"])                 # the mean of the run's heat and the extension's
    assert heat_on(end_heat, cells_, spot_box(0, 1)) > 0.1
    assert heat_on(end_heat, cells_, spot_box(1, 2)) > 0.1           # the newest extension is in it
    assert heat_on(end_heat, cells_, spot_box(1, 0)) < 1e-3          # the two it replaced are not
    assert heat_on(end_heat, cells_, spot_box(1, 1)) < 1e-3
    assert overlaps(hall_start["box"], spot_box(0, 0)) and hall_end["box"] == hall_start["box"]
    # The door's snapshot: written once located, with the heat drawn; the end names it too.
    assert door_end["snapshot"] == door_start["snapshot"] and cv2.imread(door_start["snapshot"]) is not None
    assert hall_start["snapshot"] is None                  # no keyframe handed over


# A spot bundle with wide features and the published window (F 512, W 32): locating one
# snippet runs its 50 variants (49 patches and itself) through both graphs, some 50 windows' worth.
SLOW_FEATURES, SLOW_WINDOW = 512, 32


@functools.lru_cache(maxsize=None)
def slow_spot_bundle() -> Path:
    out = Path(tempfile.mkdtemp(prefix="ssrl-slow-spot-")) / "bundle"
    return build_bundle(out, head=spot_head(SLOW_FEATURES), window=SLOW_WINDOW, threshold=0.5)


@pytest.mark.slow
def test_a_slow_localisation_leaves_the_other_cameras_scoring(tmp_path):
    from monitor.engine import Engine
    from monitor.messages.publisher import Publisher

    door = spot_video(tmp_path / "door.avi", [(64, None), (48, (0, 1)), (64, None)])
    hall = spot_video(tmp_path / "hall.avi", [(16 * 40, None)], seed=1)   # dark: scored all along
    config = Config()
    config.alerts = AlertSettings(min_snippets=2, cooldown_s=0.0, clips=str(tmp_path / "clips"))
    config.log.snapshots = str(tmp_path / "snaps")
    config.cameras = [CameraConfig(url=str(door), name="door"), CameraConfig(url=str(hall), name="hall")]
    bundle = Bundle(slow_spot_bundle(), providers=["cpu"])
    publisher = Publisher(endpoint(), "test-worker")
    heard, changed = [], threading.Condition()

    def listen(topic, message):   # on the publishing thread, in seq order
        with changed:
            heard.append((topic, message))
            changed.notify_all()

    def halls() -> int:
        return sum(t == "score.hall" for t, _ in heard)

    publisher.add_listener(listen)
    engine = Engine(config, bundle, publisher)
    # Locating begins only once the hall has had two more snippets scored (or after 120 s):
    # the real graphs still run, after the wait; only the order is made certain.
    run, waits = engine.localiser.run, []

    def run_after_the_hall_scored(graph, *inputs):
        if not waits:
            with changed:
                before = halls()
                waits.append(changed.wait_for(lambda: halls() >= before + 2, timeout=120))
        return run(graph, *inputs)

    engine.localiser.run = run_after_the_hall_scored
    score_to_the_end(engine, publisher, 600)
    assert waits == [True], "the hall was not scored while the door's alert was being located"
    alerts = [m for t, m in heard if t == "alert.door"]
    assert [a["event"] for a in alerts] == ["start", "end"], alerts
    start, end = alerts
    assert start["snippets"] == [4, 5] and end["snippets"] == [4, 6]
    assert start["located"] == 2 and end["located"] == 3          # nothing skipped: the door had one extension
    for message in alerts:
        assert np.array(message["heat"]).shape == (4, 7)
        assert overlaps(message["box"], spot_box(0, 1)), message["box"]
    assert start["snapshot"] and Path(start["snapshot"]).exists() and end["snapshot"] == start["snapshot"]
    assert end["clip"] == start["clip"] and Path(end["clip"]).exists()
    assert not [t for t, _ in heard if t == "alert.hall"]
    # The score of snippet 5 (the alert decided) went out before the hand-over; the hall's
    # snippets scored after it and before the located start prove the scoring thread went on.
    decided = next(m["seq"] for t, m in heard if t == "score.door" and m["snippet"] == 5)
    meanwhile = [m["snippet"] for t, m in heard if t == "score.hall" and decided < m["seq"] < start["seq"]]
    assert meanwhile, "no hall snippet was scored while the door's alert was located"
    assert engine.localiser.calls == 3
    status = engine.status()["engine"]                        # the status messages say so too
    assert status["alert_jobs"] == 0 and status["extensions_not_located"] == 0


@pytest.mark.slow
def test_a_stop_that_cannot_wait_for_locating_still_publishes_every_event(tmp_path):
    # A start whose run takes many slow locates (the slow spot bundle), and its end, queued as
    # the monitor stops: the drain cuts the graph run short (the worker's RunOptions) and
    # publishes both, in order, rather than lose them or hold the stop.
    import onnxruntime as ort
    bundle = Bundle(slow_spot_bundle(), providers=["cpu"])
    m = bundle.manifest
    options = ort.RunOptions()
    localiser = Localiser(bundle, Geometry.from_manifest(m).frame_size,
                          run=lambda graph, *inputs: graph(*inputs, run_options=options))
    rng = np.random.default_rng(0)
    ctx = SnippetContext(rng.standard_normal((m.window, m.crops, m.feature_size), dtype=np.float32), m.window - 1,
                         rng.standard_normal((m.crops, m.feature_size), dtype=np.float32),
                         rng.standard_normal((sum(m.patches), m.feature_size), dtype=np.float32))
    published = []
    worker = AlertWorker(localiser, lambda camera, event: published.append(event), run_options=options)
    worker.start("door", {"event": "start", "alert_id": "door-1"}, [ctx] * 200, None)
    worker.extend("door", ctx)
    worker.end("door", {"event": "end", "alert_id": "door-1", "reason": "shutdown"})
    assert worker.close(0.2)                      # the thread ended: nothing left behind
    assert [e["event"] for e in published] == ["start", "end"]
    assert published[0]["located"] < 200 and published[1]["reason"] == "shutdown"
