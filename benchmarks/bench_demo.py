"""Figures for the demo (issue 6): quality of the demo bundle on synthetic video from seeds the
recipe never uses, false alerts on anomaly-free video, and the live default on this machine.

    python benchmarks/bench_demo.py [--bundle monitor/demo_bundle] [--run runs/demo]
        [--videos 40] [--seconds 60] [--normal-minutes 10] [--normal-streams 1] [--live-seconds 60] [--jobs 2]

Prints:
1. frame AUC per stage on the unseen test set (stages 1-3 from the recipe's checkpoints in
   --run, when it is there; stage 4 is the bundle itself on ONNX Runtime), with the AUC on the
   small anomalies only (their frames and all normal frames), and stage 4 minus stage 1 there;
2. streaming (the live engine's sliding window, monitor.engine.stream_scores) versus offline
   (the whole video at once) frame AUC of the bundle, and the gap;
3. alerts on --normal-streams normal-only synthetic streams (rate=0) of --normal-minutes each, scored as the engine
   scores and put through the engine's alert policy with the bundle's threshold;
4. the default demo live: `python run_monitor.py` with no source or model (its own synthetic
   camera and the shipped bundle) for --live-seconds, publishing on a free local port: the
   seconds to its first alert, the source fps (input_fps) against the processing rate
   (processing_fps) from its status messages, and snippets dropped;
5. the cost of one snippet on this machine: render, preprocess, backbone, heads.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.model.bundle import Bundle  # noqa: E402
from monitor.config import DEMO_BUNDLE  # noqa: E402
from monitor.engine import stream_scores  # noqa: E402
from monitor.model.offline import score_video  # noqa: E402
from monitor.video.preprocess import Geometry, Preprocessor  # noqa: E402
from monitor.video.synthetic import SyntheticCamera  # noqa: E402
from training.demo import (BENCH_SEEDS, CAMERA, SNIPPET, Plan, alert_trace, extract_all,  # noqa: E402
                           frame_auc, make_videos)
from tests.live_helpers import endpoint as free_endpoint  # noqa: E402
from training.evaluate import frames_from_snippets  # noqa: E402


def unseen_videos(n: int, seconds: float, normal_minutes: float, normal_streams: int = 1):
    """Test videos (70 % with anomalies) and one long anomaly-free video, all from seeds at
    BENCH_SEEDS and above, which the recipe never uses (its seeds lie below)."""
    rng = np.random.default_rng([BENCH_SEEDS, 6])
    n_abn = int(round(0.7 * n))
    plan = Plan()
    videos = make_videos("test", 1, n_abn, seconds, plan.test_rate, BENCH_SEEDS, rng)
    videos += make_videos("test", 0, n - n_abn, seconds, 0.0, BENCH_SEEDS + n_abn, rng)
    videos += make_videos("normal", 0, normal_streams, normal_minutes * 60, 0.0, BENCH_SEEDS + n, rng)
    return videos


def stage_aucs(run: Path, features: Path, names: list[str], gt: np.ndarray, small: np.ndarray) -> list[dict]:
    """Stages 1-3 (and 4) from the recipe's checkpoints, scored offline with PyTorch."""
    report = run / "report.json"
    if not report.is_file():
        return []
    from training.checkpoint import load_model
    from training.data import FeatureReader, FeatureSpec
    from training.evaluate import score_snippets
    rows = []
    for row in json.loads(report.read_text())["stages"]:
        model = load_model(row["checkpoint"], stage=row["stage"], crops=1)
        reader = FeatureReader(FeatureSpec.for_model(model.config, layout="snippet-major"))
        scores = [score_snippets(model, *reader.snippets(features / f"{n}_i3d.npy")) for n in names]
        frames = frames_from_snippets(scores)
        rows.append({"stage": row["stage"], "auc": frame_auc(frames, gt),
                     "auc_small": frame_auc(frames, gt, (gt == 0) | small)})
    return rows


def live_default(seconds: float) -> dict:
    """Run the default demo (no source, no model) and listen to it from outside."""
    import zmq
    endpoint = free_endpoint()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "run_monitor.py", "--no-dashboard", "--publish", endpoint,
                                 "--duration", str(seconds), "--events", str(Path(tmp) / "events.db")],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first_alert = first_score = None
        status = []
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        while proc.poll() is None or poller.poll(0):
            if not poller.poll(200):
                continue
            topic, body = sub.recv_multipart()
            msg = json.loads(body)
            now = time.monotonic() - started
            if topic.startswith(b"score.") and first_score is None:
                first_score = now
            elif topic.startswith(b"alert.") and msg.get("event") == "start" and first_alert is None:
                first_alert = now
            elif topic == b"status":
                status.append(msg)
        err = proc.stderr.read()
    sub.close()
    ctx.term()
    cams = [c for s in status[len(status) // 3:] for c in s.get("cameras", [])]   # after warm-up
    return {"returncode": proc.returncode, "first_score_s": first_score, "first_alert_s": first_alert,
            "input_fps": statistics.median([c["input_fps"] for c in cams]) if cams else None,
            "processing_fps": statistics.median([c["processing_fps"] for c in cams]) if cams else None,
            "dropped": max([c.get("dropped_snippets", 0) for c in cams], default=None),
            "status_messages": len(status), "stderr_tail": err[-400:]}


def snippet_cost(bundle: Bundle, repeats: int = 10) -> dict:
    cam = SyntheticCamera.from_url("synthetic://?seed=5&rate=3&first=1", realtime=False)
    pre = Preprocessor(Geometry.from_manifest(bundle.manifest))
    m = bundle.manifest
    times = {"render": [], "preprocess": [], "backbone": [], "heads": []}
    window = np.zeros((1, m.window, m.crops, m.feature_size), np.float32)
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        frames = np.stack([cam.read()[1] for _ in range(SNIPPET)])
        t1 = time.perf_counter()
        c, p = pre.snippet(frames)
        t2 = time.perf_counter()
        fc, fp = bundle.backbone(c), bundle.backbone(p)
        t3 = time.perf_counter()
        window[0, -1] = bundle.fuse(fc[None], fp[None])[0]
        bundle.scores(window)
        t4 = time.perf_counter()
        for k, (a, b) in zip(times, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
            times[k].append((b - a) * 1e3)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "demo", help="the recipe's --out (for stages 1-3)")
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--normal-minutes", type=float, default=10.0)
    p.add_argument("--normal-streams", type=int, default=1, help="anomaly-free streams, each of --normal-minutes")
    p.add_argument("--live-seconds", type=float, default=60.0, help="0 skips the live run")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", type=Path, help="keep the features here (default: a temporary folder)")
    args = p.parse_args()

    bundle = Bundle(args.bundle, providers=["cpu"])
    m = bundle.manifest
    print(f"bundle {args.bundle}: stage {m.stage}, F {m.feature_size}, window {m.window}, threshold {m.threshold}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        videos = unseen_videos(args.videos, args.seconds, args.normal_minutes, args.normal_streams)
        t = time.perf_counter()
        results = extract_all(videos, args.bundle, work, args.jobs, lambda s: None)
        print(f"rendered and extracted {len(videos)} unseen videos in {time.perf_counter() - t:.0f} s "
              f"(seeds {BENCH_SEEDS}..{BENCH_SEEDS + len(videos) - 1})")
        test = [v for v in videos if v.split == "test"]
        names = [v.name for v in test]
        gt = np.concatenate([results[n]["gt"] for n in names]).astype(np.int64)
        small = np.concatenate([results[n]["small"] for n in names])
        n_events = sum(len(results[n]["events"]) for n in names)
        n_small = sum(e["small"] for n in names for e in results[n]["events"])
        print(f"test set: {len(test)} videos, {len(gt)} frames, {gt.mean():.1%} anomalous, "
              f"{n_events} anomalies ({n_small} small)")

        # 1. per stage
        rows = stage_aucs(args.run, work / "test", names, gt, small)
        from monitor.model.feature_files import load_video_features
        feats = [load_video_features(work / "test" / f"{n}_i3d.npy", m) for n in names]
        offline = [score_video(bundle, np.asarray(c), None if q is None else np.asarray(q)) for c, q in feats]
        streaming = [stream_scores(bundle, np.asarray(c), None if q is None else np.asarray(q)) for c, q in feats]
        off_frames, str_frames = frames_from_snippets(offline), frames_from_snippets(streaming)
        print("\n1. frame AUC per stage (unseen seeds)")
        print(f"   {'stage':>5} {'AUC':>8} {'AUC small':>10}")
        for r in rows:
            print(f"   {r['stage']:>5} {r['auc']:8.4f} {r['auc_small']:10.4f}   (checkpoint, PyTorch)")
        auc_b, auc_bs = frame_auc(off_frames, gt), frame_auc(off_frames, gt, (gt == 0) | small)
        print(f"   {m.stage:>5} {auc_b:8.4f} {auc_bs:10.4f}   (the bundle, ONNX Runtime)")
        if rows:
            print(f"   small anomalies: stage 4 - stage 1 = {auc_bs - rows[0]['auc_small']:+.4f}")

        # 2. streaming vs offline
        auc_s = frame_auc(str_frames, gt)
        print(f"\n2. streaming (window {m.window}) AUC {auc_s:.4f} vs offline {auc_b:.4f}: gap {auc_b - auc_s:+.4f}")

        # 3. normal-only streams
        print(f"\n3. normal-only streams, alerts with the bundle's policy (threshold {m.threshold}, "
              f"{m.min_snippets} snippet(s) long):")
        for normal in [v for v in videos if v.split == "normal"]:
            c, q = load_video_features(work / "normal" / f"{normal.name}_i3d.npy", m)
            ns = stream_scores(bundle, np.asarray(c), None if q is None else np.asarray(q))
            alerts = alert_trace(ns, m.threshold, m.min_snippets)[0]
            print(f"   seed {normal.seed}, {normal.frames / CAMERA['fps'] / 60:.1f} min ({len(ns)} snippets): "
                  f"{alerts} alert(s); highest score {ns.max():.3f}")
        # Per-event detection under the bundle's policy, on the streaming scores: the policy is
        # in an alert during some snippet of the event (or the one after it).
        hit, small_hit = [], []
        for s, n in zip(streaming, names):
            active = alert_trace(s, m.threshold, m.min_snippets)[1]
            for e in results[n]["events"]:
                seen = bool(active[e["start"] // SNIPPET: e["end"] // SNIPPET + 2].any())
                (small_hit if e["small"] else hit).append(seen)
        print(f"   test anomalies alerted on (streaming): {np.mean(hit + small_hit):.0%} of {len(hit + small_hit)}; "
              f"large {np.mean(hit):.0%} of {len(hit)}, small {np.mean(small_hit):.0%} of {len(small_hit)}")

    # 4. live default
    if args.live_seconds > 0:
        live = live_default(args.live_seconds)
        print(f"\n4. `python run_monitor.py` (defaults) for {args.live_seconds:.0f} s: exit {live['returncode']}, "
              f"first score after {live['first_score_s'] and round(live['first_score_s'], 1)} s, first alert after "
              f"{live['first_alert_s'] and round(live['first_alert_s'], 1)} s (from process start)")
        print(f"   source {live['input_fps']} fps, processing {live['processing_fps'] and round(live['processing_fps'], 2)}"
              f" fps (status messages, after warm-up), dropped snippets {live['dropped']}, {live['status_messages']} status messages")
        if live["returncode"] not in (0, None):
            print("   stderr: " + live["stderr_tail"])

    # 5. cost per snippet
    cost = snippet_cost(bundle)
    total = sum(cost.values())
    print(f"\n5. one snippet ({SNIPPET} frames) on this machine, medians: " +
          ", ".join(f"{k} {v:.1f} ms" for k, v in cost.items()) +
          f"; total {total:.0f} ms -> capacity {SNIPPET * 1000 / total:.0f} fps vs source {CAMERA['fps']:.0f} fps "
          f"({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
