"""Figures for per-camera calibration (issue 13 §6): false alerts per hour on anomaly-free
video and the share of injected anomalies that raise an alert, with each camera's calibrated
levels against the bundle's fixed ones; and real footage calibrated on its first half.

    python benchmarks/bench_calibration.py [--bundle monitor/demo_bundle] [--cameras 4]
        [--calib-minutes 10] [--test-minutes 15] [--anomaly-minutes 5] [--targets 1 24] [--jobs 2]
        [--real vtest.avi tree.avi] [--no-synthetic]

1. Synthetic cameras (seeds from BENCH_SEEDS + 100000 on, which neither the demo recipe nor
   bench_demo.py uses): each camera is one scene (one seed). Its anomaly-free stream is scored
   as the live engine scores it (the one preprocessing path and the bundle's backbone, then
   monitor.engine.stream_scores: spatial once per snippet, the sliding window); the first
   --calib-minutes calibrate it (monitor.alerts.calibration, as `run_monitor.py calibrate` and
   `learn_s` do), the next --test-minutes count false alerts. The same scene with anomalies
   injected (rate 3 a minute; the first --calib-minutes rendered but not used) gives the share
   of anomalies during which the policy is in alert (or the snippet after), as bench_demo.py
   counts it. Alerts come from the engine's own policy (monitor.alerts.policy) replayed on the
   scores: the bundle's threshold and minimum duration, or the camera's calibrated ones.
2. Real normal footage (opencv-doc): `run_monitor.py calibrate` on the first half of each
   video, then `run_monitor.py` on the second half with that calibration and without it:
   alerts raised (from the event store).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.alerts import calibration as calib  # noqa: E402
from monitor.alerts.policy import AlertPolicy, SnippetInfo  # noqa: E402
from monitor.config import DEMO_BUNDLE, AlertSettings  # noqa: E402
from monitor.messages.event_log import read_events  # noqa: E402
from monitor.video.synthetic import SyntheticCamera, SyntheticConfig  # noqa: E402
from tests.live_helpers import endpoint as free_endpoint, video_from  # noqa: E402
from training.demo import BENCH_SEEDS, CAMERA, SNIPPET  # noqa: E402

SEED0 = BENCH_SEEDS + 100_000
SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")
SNIPPET_S = SNIPPET / CAMERA["fps"]

_worker: dict = {}


def _init(bundle_dir: str) -> None:
    from monitor.model.bundle import Bundle
    from monitor.video.preprocess import Geometry
    from training.extract import Extractor
    bundle = Bundle(bundle_dir, providers=["cpu"], threads=1)
    _worker["bundle"] = bundle
    _worker["extractor"] = Extractor(bundle, Geometry.from_manifest(bundle.manifest), batch=32)


def _frames(seconds: float) -> int:
    return int(round(seconds * CAMERA["fps"] / SNIPPET)) * SNIPPET


def score_stream(task: tuple) -> dict:
    """Render one synthetic stream (skipping its first `skip_s` seconds unscored) and score it
    as the live engine does -> snippet scores and the anomalies that lie in the scored part."""
    from monitor.engine import stream_scores
    name, seed, rate, skip_s, seconds = task
    skip, frames = _frames(skip_s), _frames(seconds)
    cam = SyntheticCamera(SyntheticConfig(seed=seed, rate=rate, first=None if rate else 8.0, realtime=False,
                                          duration=(skip + frames) / CAMERA["fps"], name=name, **CAMERA))

    def kept():
        for i, frame in enumerate(cam):
            if i >= skip:
                yield frame

    crops, per_grid = _worker["extractor"].snippets(kept())
    patches = np.concatenate(per_grid, axis=1) if per_grid else None
    scores = stream_scores(_worker["bundle"], crops, patches)
    events = [{"start": e["start"] - skip, "end": e["end"] - skip, "small": e["small"], "kind": e["kind"]} for e in cam.event_summaries() if e["start"] >= skip and e["end"] < skip + frames]
    return {"name": name, "seed": seed, "scores": scores, "events": events}


def _cache_file(work: Path, name: str, task: tuple, sha: str) -> Path:
    return work / f"{name}-{hashlib.sha256(repr((task, sha)).encode()).hexdigest()[:12]}.json"


def _cached(work: Path | None, tasks: list, sha: str) -> dict:
    """Streams scored before with the same parameters and bundle (--work)."""
    out = {}
    for task in tasks if work else []:
        path = _cache_file(work, task[0], task, sha)
        if path.is_file():
            r = json.loads(path.read_text())
            out[task[0]] = {**r, "scores": np.array(r["scores"], np.float32)}
    return out


def _keep(work: Path | None, result: dict, tasks: list, sha: str) -> None:
    if work:
        work.mkdir(parents=True, exist_ok=True)
        task = next(t for t in tasks if t[0] == result["name"])
        _cache_file(work, task[0], task, sha).write_text(json.dumps({**result, "scores": result["scores"].tolist()}))


def trace(scores: np.ndarray, settings: AlertSettings) -> tuple[int, np.ndarray]:
    """The engine's alert policy on a stream of snippet scores: alerts started, and whether it is
    in an alert at each snippet."""
    policy = AlertPolicy("bench", settings, {})
    starts, active = 0, np.zeros(len(scores), bool)
    for t, s in enumerate(scores):
        info = SnippetInfo(t, t * SNIPPET, t * SNIPPET + SNIPPET - 1, t * SNIPPET_S, (t + 1) * SNIPPET_S)
        starts += sum(1 for e in policy.update(info, float(s))[1] if e["event"] == "start")
        active[t] = policy.in_alert
    return starts, active


def detected(scores: np.ndarray, events: list[dict], settings: AlertSettings) -> list[bool]:
    active = trace(scores, settings)[1]
    return [bool(active[e["start"] // SNIPPET: e["end"] // SNIPPET + 2].any()) for e in events]


def synthetic(args) -> None:
    from monitor.model.bundle import Bundle
    from monitor.model.fingerprint import bundle_sha
    bundle = Bundle(args.bundle, providers=["cpu"])
    m = bundle.manifest
    sha = bundle_sha(args.bundle, m)
    tasks = []
    for k in range(args.cameras):
        seed = SEED0 + k
        tasks.append((f"cam{k}-normal", seed, 0.0, 0.0, (args.calib_minutes + args.test_minutes) * 60))
        tasks.append((f"cam{k}-anomalies", seed, 3.0, args.calib_minutes * 60, args.anomaly_minutes * 60))
    started = time.perf_counter()
    results = _cached(args.work, tasks, sha)
    todo = [t for t in tasks if t[0] not in results]
    if todo:
        with multiprocessing.get_context("spawn").Pool(args.jobs, _init, (str(args.bundle),)) as pool:
            for r in pool.imap_unordered(score_stream, todo):
                results[r["name"]] = r
                _keep(args.work, r, tasks, sha)
    print(f"scored {len(tasks)} synthetic streams ({args.cameras} cameras, seeds {SEED0}..{SEED0 + args.cameras - 1}) "
          f"in {time.perf_counter() - started:.0f} s{f' ({len(tasks) - len(todo)} from {args.work})' if len(todo) < len(tasks) else ''}")

    n_cal = _frames(args.calib_minutes * 60) // SNIPPET
    fixed = AlertSettings().resolved(m.threshold, m.min_snippets)
    rows = {"bundle": {"false": 0, "hits": []}}
    per_camera = []
    hours = 0.0
    for k in range(args.cameras):
        normal, abn = results[f"cam{k}-normal"], results[f"cam{k}-anomalies"]
        cal_scores, test_scores = normal["scores"][:n_cal], normal["scores"][n_cal:]
        hours += len(test_scores) * SNIPPET_S / 3600
        fixed_false = trace(test_scores, fixed)[0]
        rows["bundle"]["false"] += fixed_false
        rows["bundle"]["hits"] += list(zip(detected(abn["scores"], abn["events"], fixed), abn["events"]))
        line = {"camera": k, "seed": normal["seed"], "test_max": float(test_scores.max()),
                "calib_max": float(cal_scores.max()), "bundle_false": fixed_false}
        for target in args.targets:
            cal = calib.calibrate([calib.Footage(cal_scores, n_cal * SNIPPET_S)], camera=f"cam{k}", bundle_sha=sha,
                                  target_per_day=target, min_snippets=m.min_snippets, floor=m.threshold)
            settings = calib.settings_for(AlertSettings(), cal)
            row = rows.setdefault(f"calibrated, {target:g}/day", {"false": 0, "hits": []})
            false = trace(test_scores, settings)[0]
            row["false"] += false
            row["hits"] += list(zip(detected(abn["scores"], abn["events"], settings), abn["events"]))
            line[target] = (cal.threshold, cal.off_threshold, cal.min_snippets, cal.reached, false)
        per_camera.append(line)

    print(f"\n1. synthetic camera, {args.cameras} scenes: calibrated on the first {args.calib_minutes:g} min of each "
          f"camera's anomaly-free stream, false alerts counted on the next {args.test_minutes:g} min "
          f"({hours:.2f} h in all), anomalies injected into the same scenes")
    print(f"   bundle: threshold {m.threshold} held for {m.min_snippets} snippet(s), off {fixed.off}, "
          f"cooldown {fixed.cooldown_s:g} s")
    for line in per_camera:
        cals = "; ".join(f"{t:g}/day: on {v[0]:.4f} off {v[1]:.4f} x{v[2]}{'' if v[3] else ' (target not reached)'}"
                         f", {v[4]} false" for t, v in line.items() if isinstance(t, float))
        print(f"   camera {line['camera']} (seed {line['seed']}): highest score {line['calib_max']:.3f} while "
              f"calibrating, {line['test_max']:.3f} in the test; bundle {line['bundle_false']} false; {cals}")
    n_events = len(rows["bundle"]["hits"])
    n_small = sum(e["small"] for _, e in rows["bundle"]["hits"])
    print(f"\n   {'levels':<22} {'false alerts':>12} {'per hour':>9} {'anomalies alerted':>18} {'small':>7} {'large':>7}")
    for name, row in rows.items():
        hits = [h for h, _ in row["hits"]]
        small = [h for h, e in row["hits"] if e["small"]]
        large = [h for h, e in row["hits"] if not e["small"]]
        print(f"   {name:<22} {row['false']:>12d} {row['false'] / hours:>9.2f} {np.mean(hits):>17.0%} "
              f"{_share(small):>7} {_share(large):>7}")
    print(f"   ({n_events} anomalies, {n_small} small; in alert during the anomaly or the snippet after it)")


def _share(hits: list) -> str:
    return f"{np.mean(hits):.0%}" if hits else "-"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=1800)


def real(args) -> None:
    print(f"\n2. real normal footage (opencv-doc), calibrated with `run_monitor.py calibrate` on the first half "
          f"({args.targets[0]:g} false alert/day), then `run_monitor.py` on the second half:")
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    for name in args.real:
        video = SAMPLES / name
        if not video.is_file():
            print(f"   {video}: not installed (apt-get install opencv-doc)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            capture = cv2.VideoCapture(str(video))
            fps, total = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            capture.release()
            half = total // 2
            video_from(video, tmp / "second.avi", half)
            camera = Path(name).stem
            cal = _run(["calibrate", "--model", str(args.bundle), "--source", f"{camera}={video}",
                        "--duration", f"{half / fps:.3f}", "--target-per-day", f"{args.targets[0]:g}",
                        "--state", str(tmp / "state"), "--events", str(tmp / "none.db")], tmp)
            if cal.returncode != 0:
                print(f"   {name}: calibrate failed: {cal.stderr.strip()[-300:]}")
                continue
            stored = json.loads(next((tmp / "state" / "calibration" / camera).glob("*.json")).read_text())
            counts = {}
            for label, state in (("calibrated", tmp / "state"), ("bundle", tmp / "empty")):
                db = tmp / f"{label}.db"
                run = _run(["--no-dashboard", "--model", str(args.bundle), "--source", f"{camera}={tmp / 'second.avi'}",
                            "--state", str(state), "--events", str(db), "--publish", free_endpoint()], tmp)
                starts = [e for e in read_events(db) if e["event"] == "start"] if run.returncode == 0 else None
                counts[label] = "failed" if starts is None else len(starts)
            print(f"   {name} ({total} frames, {fps:g} fps, {size[0]}x{size[1]}): calibrated on {stored['footage_s']:.1f} s "
                  f"({stored['snippets']} snippets): on {stored['threshold']:.4f}, off {stored['off_threshold']:.4f}, "
                  f"{stored['min_snippets']} snippet(s){'' if stored['reached'] else ' (target not reached)'}; "
                  f"second half ({(total - half) / fps:.1f} s): {counts['calibrated']} alert(s) calibrated, "
                  f"{counts['bundle']} with the bundle's levels ({manifest['threshold']} x{manifest.get('min_snippets', 1)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--calib-minutes", type=float, default=10.0)
    p.add_argument("--test-minutes", type=float, default=15.0)
    p.add_argument("--anomaly-minutes", type=float, default=5.0)
    p.add_argument("--targets", type=float, nargs="+", default=[1.0, 24.0], help="false alerts per day to calibrate for")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--real", nargs="*", default=["vtest.avi"], help="opencv-doc sample videos")
    p.add_argument("--no-synthetic", action="store_true")
    p.add_argument("--work", type=Path, help="keep the scored streams here and reuse them on the next run")
    args = p.parse_args()
    logging.getLogger("monitor").setLevel(logging.ERROR)   # the table says what calibration did
    if not args.no_synthetic:
        synthetic(args)
    if args.real:
        real(args)


if __name__ == "__main__":
    main()
