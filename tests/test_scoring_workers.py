"""Scoring workers: batches scored side by side on the CPU (providers.scoring_layout), every
camera's snippets still reported once each, in order, with the scores one worker gives; and
each backbone batch run in cache-sized pieces there, with the features of one call."""
from __future__ import annotations

import numpy as np

from monitor.config import DEMO_BUNDLE, CameraConfig, Config
from monitor.engine import Engine
from monitor.messages.publisher import Publisher
from monitor.model.bundle import CPU_CALL_BYTES, Bundle
from monitor.model.providers import physical_cores, scoring_layout
from tests.factories import DARK, cached_bundle, write_video
from tests.live_helpers import endpoint, score_to_the_end

SNIPPETS = 12


def scores_by_camera(videos, workers: int) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    config = Config()
    config.engine.max_pending = 2  # small queues: many batches, of mixed cameras
    config.cameras = [CameraConfig(url=str(v), name=f"cam{i}") for i, v in enumerate(videos)]  # files, unpaced
    publisher = Publisher(endpoint(), f"workers-{workers}")
    heard: dict[str, list[tuple[int, float]]] = {}
    publisher.add_listener(lambda topic, m: heard.setdefault(m["camera"], []).append((m["snippet"], m["raw_score"]))
                           if m["type"] == "score" else None)
    engine = Engine(config, Bundle(cached_bundle(), threads=1, workers=workers), publisher)
    score_to_the_end(engine, publisher, 120)
    status = engine.status()["engine"]  # the status messages say how it ran
    assert (status["workers"], status["threads"]) == (workers, 1)
    return heard, [t.name for t in engine._threads]


def test_several_workers_report_every_snippet_once_in_order_with_the_scores_of_one(tmp_path):
    # Each camera's brightness steps up and down, so a reordered window would change its scores.
    videos = [write_video(tmp_path / f"cam{i}.avi", [(16 * 3, DARK), (16 * 3, 200), (16 * 6, DARK + 20 * i)], seed=i)
              for i in range(3)]
    one, _ = scores_by_camera(videos, workers=1)
    three, names = scores_by_camera(videos, workers=3)
    assert sum(n.startswith("engine") for n in names) == 3
    for cam in ("cam0", "cam1", "cam2"):
        assert [i for i, _ in three[cam]] == list(range(SNIPPETS)), cam
        assert [i for i, _ in one[cam]] == list(range(SNIPPETS)), cam
        np.testing.assert_allclose([s for _, s in three[cam]], [s for _, s in one[cam]], rtol=1e-5, atol=1e-6)
    assert len({round(s, 4) for s in [s for _, s in one["cam0"]]}) > 1  # the scores do move


def test_the_scoring_layout_on_the_cpu():
    cores = physical_cores()
    assert scoring_layout(["cpu"]) == (cores, 1)             # one run per core, one thread each
    assert scoring_layout(["cpu"], threads=3) == (1, 3)      # threads alone: one run, as asked
    assert scoring_layout(["cpu"], workers=2) == (2, max(1, cores // 2))
    assert scoring_layout(["cpu"], threads=2, workers=3) == (3, 2)
    assert scoring_layout(["cpu"], snippet_bytes=142_098_432) == (1, cores)  # I3D: one run on every core


def test_a_bundle_for_the_live_engine_takes_the_layout_and_offline_use_keeps_one_run():
    live = Bundle(cached_bundle(), providers=["cpu"], workers=None)
    assert (live.workers, live.threads) == scoring_layout(["cpu"], snippet_bytes=live.manifest.snippet_bytes())
    offline = Bundle(cached_bundle(), providers=["cpu"])
    assert (offline.workers, offline.threads) == (1, physical_cores())


class CountingSession:
    """The real ONNX Runtime session, its runs counted."""

    def __init__(self, session):
        self.session, self.runs = session, []

    def run(self, outputs, feeds, run_options=None):
        self.runs.append(len(feeds["clips"]))
        return self.session.run(outputs, feeds, run_options)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_on_the_cpu_the_backbone_runs_in_cache_sized_pieces_with_the_features_of_one_call():
    demo = Bundle(DEMO_BUNDLE, providers=["cpu"])
    clips = np.random.default_rng(5).integers(0, 256, (3 * 49, 16, 24, 24, 3), dtype=np.uint8)  # 3 snippets' patches
    whole = demo.sessions["backbone"].run(None, {"clips": clips})[0]
    counted = demo.sessions["backbone"] = CountingSession(demo.sessions["backbone"])
    pieces = demo.backbone(clips)
    per_call = CPU_CALL_BYTES // clips[0].nbytes
    assert 1 <= per_call < len(clips)
    assert counted.runs == [per_call] * (len(clips) // per_call) + ([len(clips) % per_call] if len(clips) % per_call else [])
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-6)
    counted.runs.clear()
    assert demo.backbone(clips[:1]).shape == (1, whole.shape[1]) and counted.runs == [1]
