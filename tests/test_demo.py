"""The demo: its backbone, the shipped bundle on the synthetic camera, and a miniature run of
the recipe (python -m training.demo --mini) in a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monitor.model.bundle import Bundle
from monitor.config import DEMO_BUNDLE
from monitor.engine import stream_scores
from monitor.messages.event_store import read_store
from monitor.video.preprocess import Geometry, Preprocessor
from monitor.video.synthetic import render
from tests.live_helpers import Subscriber, endpoint, monitor
from training.demo import GEOMETRY, MINI, SNIPPET, Plan, alert_trace, plan_videos
from training.demo_backbone import DemoBackbone, train_backbone

ROOT = Path(__file__).resolve().parents[1]


def _tiny_videos(n=2):
    """Anomaly-free videos as the backbone trains on them: RGB planes at the demo frame size."""
    from training.demo import VideoSpec, render_planes
    return [render_planes(VideoSpec(f"b{i}", "backbone", 0, 5000 + i, 80, 0.0, None)) for i in range(n)]


def test_backbone_sees_motion_only():
    """A still scene gives one and the same feature whatever it shows; movement does not."""
    net = DemoBackbone(feature_size=64).eval()
    g = torch.Generator().manual_seed(0)
    still_a = torch.rand(1, 3, 1, 24, 24, generator=g).repeat(1, 1, 16, 1, 1) * 2 - 1
    still_b = torch.rand(1, 3, 1, 24, 24, generator=g).repeat(1, 1, 16, 1, 1) * 2 - 1
    moving = torch.rand(1, 3, 16, 24, 24, generator=g) * 2 - 1
    with torch.no_grad():
        fa, fb, fm = net(still_a), net(still_b), net(moving)
    assert fa.shape == (1, 64)
    assert torch.equal(fa, fb)
    assert float((fm - fa).abs().max()) > 1e-3


def test_backbone_training_is_seeded_and_learns_on_normal_video():
    videos = _tiny_videos()
    assert videos[0].shape == (3, 80, GEOMETRY.frame_size[1], GEOMETRY.frame_size[0]) and videos[0].dtype == np.uint8
    a = train_backbone(videos, GEOMETRY, steps=3, batch=8, seed=1)
    b = train_backbone(videos, GEOMETRY, steps=3, batch=8, seed=1)
    torch.manual_seed(1)
    start = DemoBackbone()     # the weights training starts from with that seed
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.convs[0].weight, start.convs[0].weight)   # and it did learn
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_recipe_videos_are_seeded_and_disjoint():
    a, b = plan_videos(Plan(), 0), plan_videos(Plan(), 0)
    other = plan_videos(Plan(), 1)
    assert a == b
    assert len({v.seed for v in a}) == len(a)
    assert not {v.seed for v in a} & {v.seed for v in other}
    assert all(v.frames % SNIPPET == 0 for v in a)
    train = [v for v in a if v.split == "train"]
    assert {v.label for v in train} == {0, 1}
    assert all(v.rate == 0 for v in a if v.label == 0) and all(v.first is not None for v in a if v.label == 1)


def _clip_scores(bundle: Bundle, url: str, frames: int):
    """Render a clip and score it as the live engine does: one preprocessing path, the
    bundle's backbone, the spatial graph per snippet, the temporal graph on a sliding window."""
    video, cam = render(url, frames)
    pre = Preprocessor(Geometry.from_manifest(bundle.manifest))
    crops, patches = [], []
    for t in range(frames // SNIPPET):
        c, p = pre.snippet(video[t * SNIPPET:(t + 1) * SNIPPET])
        crops.append(bundle.backbone(c))
        patches.append(bundle.backbone(p))
    scores = stream_scores(bundle, np.stack(crops), np.stack(patches))
    labels = cam.ground_truth[: len(scores) * SNIPPET].reshape(-1, SNIPPET).max(axis=1)
    return scores, labels


@pytest.mark.slow
def test_shipped_bundle_flags_an_injected_anomaly():
    bundle = Bundle(DEMO_BUNDLE, providers=["cpu"])
    m = bundle.manifest
    assert m.stage == 4 and bundle.has_backbone and m.crops == GEOMETRY.crops
    assert Geometry.from_manifest(m) == GEOMETRY
    assert sum(f.stat().st_size for f in DEMO_BUNDLE.iterdir()) < 20e6
    # A fire and a vehicle, each in a clip of its own from a seed the recipe never used, put
    # through the engine's alert policy with the bundle's threshold and minimum duration.
    for kind in ("fire", "vehicle"):
        scores, labels = _clip_scores(bundle, f"synthetic://?seed=987654321&rate=2&first=12&kinds={kind}", 30 * 15)
        starts, active = alert_trace(scores, m.threshold, m.min_snippets)
        assert labels.any() and not labels[:10].any()
        assert not active[:10].any(), f"{kind}: the normal start already alerts"
        assert active[labels == 1].any() and starts >= 1, f"{kind}: not flagged"


@pytest.mark.slow
def test_the_default_run_raises_an_alert_on_the_socket(tmp_path):
    """`python run_monitor.py` with no source and no model: the synthetic camera and the
    shipped bundle, through the real engine, until an alert reaches a subscriber."""
    ep = endpoint()
    sub = Subscriber(ep)
    proc = monitor(tmp_path, "--no-dashboard", "--publish", ep, "--events", str(tmp_path / "events.db"),
                   "--status-interval", "1")
    try:
        alert = sub.wait_for(lambda ms: [m for t, m, _ in ms if t.startswith("alert.") and m["event"] == "start"],
                             "an alert", timeout=180, process=proc)[0]
    finally:
        code = proc.terminate()
        sub.close()
    assert code == 0, proc.stderr()[-3000:]
    assert alert["camera"] == "synthetic" and alert["threshold"] == Bundle(DEMO_BUNDLE).manifest.threshold
    status = [c for m in sub.of("status") for c in m["cameras"]]
    assert {c["camera"] for c in status} == {"synthetic"} and any((c["input_fps"] or 0) > 0 for c in status)
    assert all(c["processing_fps"] >= 0 for c in status)   # frames scored per second, beside input_fps
    logged = read_store(tmp_path / "events.db")
    assert alert["alert_id"] in {e["alert_id"] for e in logged} and alert["stored"] is True


@pytest.mark.slow
def test_miniature_recipe_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "training.demo", "--mini", "--out", str(out), "--jobs", "1",
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [r["stage"] for r in report["stages"]] == [1, 2, 3, 4]
    assert all(0.0 <= r["auc"] <= 1.0 for r in report["stages"])
    assert "frame AUC" in proc.stderr and "small anomalies" in proc.stderr
    # The training list carries video labels only; the test set has frame labels.
    lines = (out / "train.list").read_text().split()
    assert len(lines) == MINI.train_normal + MINI.train_abnormal and all(l.endswith((",0", ",1")) for l in lines)
    gt = np.load(out / "test_gt.npy")
    feats = sorted((out / "features" / "test").glob("*_i3d.npy"))
    main = [f for f in feats if "_patch" not in f.name]
    assert len(gt) == sum(np.load(f).shape[0] for f in main) * SNIPPET
    # The bundle it wrote loads and scores with ONNX Runtime.
    bundle = Bundle(out / "bundle", providers=["cpu"])
    assert bundle.manifest.stage == 4 and bundle.has_backbone
    assert 0 < bundle.manifest.threshold < 1
    clip = np.zeros((2, 3, 16, 24, 24), np.float32)
    assert bundle.backbone(clip).shape == (2, bundle.manifest.feature_size)
