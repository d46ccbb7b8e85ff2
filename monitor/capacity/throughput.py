"""The engine on real video files, through the real Engine (reader threads, preprocessing,
batching, heads, policy, publisher):

- throughput: N cameras fed as fast as they can be read (files unpaced, looped: nothing is
  dropped, the engine is the bottleneck), against the inference bound: the same batches, of
  the same sizes, through the graphs alone (fused_features and the temporal head, as the
  engine runs them) with their inputs prepared beforehand;
- latency at 25 fps: N paced cameras, a snippet's last frame read -> its score published;
- cameras_at_25fps: paced 25 fps cameras added until snippets are dropped or fall behind,
  found by trying (a step up from a known good count, halving between good and bad)."""
from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid

import numpy as np

from monitor.capacity import threads
from monitor.capacity.context import FPS, Bench, side_by_side
from monitor.config import CameraConfig, Config
from monitor.engine import Engine, batch_limit, fused_features, score_windows
from monitor.messages.publisher import Publisher

KEYS = {
    "engine_snippets_per_s": "snippets scored per second, N cameras read as fast as they decode",
    "inference_bound_snippets_per_s": "the same batches through the graphs alone, inputs prepared beforehand",
    "engine_efficiency": "engine_snippets_per_s / inference_bound_snippets_per_s",
    "mean_batch": "mean snippets per backbone call in the engine run",
    "engine_cpu_ms_per_snippet": "CPU time of the whole monitor process per snippet in that run (all threads: "
                                 "decoding, preprocessing, graphs, publishing)",
    "inference_cpu_ms_per_snippet": "CPU time per snippet of the graphs alone, same batches",
    "engine_efficiency_cpu": "inference_cpu / engine_cpu: the same ratio by CPU time, which others' load on the "
                             "machine does not move",
    "cameras_per_core_by_cpu": "25 fps cameras one core's CPU time covers at engine_cpu_ms_per_snippet "
                               "(the sizing rule; cameras_at_25fps is the count found by trying)",
    "cores_used": "cores the measurements ran on",
    "reader_cpu_ms_per_snippet": "CPU time of the camera reader threads per snippet they made in that run: decoding, "
                                 "resizing each frame, preparing the snippet's clips (Linux per-thread counters)",
    "worker_cpu_ms_per_snippet": "CPU time of the scoring workers per snippet scored in that run: the graphs, batching, "
                                 "the heads, the alert policy",
    "engine_efficiency_ceiling": "inference_cpu / (inference_cpu + reader_cpu): the most engine_efficiency can be where "
                                 "the readers share the graphs' cores (a CPU provider), whatever the engine does",
    "engine_efficiency_net": "engine_efficiency / engine_efficiency_ceiling: how close the engine comes to the graphs "
                             "once the readers' own work is counted (1: it loses nothing around the calls)",
}
LATENCY_KEYS = {
    "latency_ms_p50": "median: a snippet's last frame read -> its score published, N paced 25 fps cameras (ms)",
    "latency_ms_p99": "99th percentile of the same (ms)",
    "dropped_at_25fps": "snippets dropped in that run (live cameras drop when scoring falls behind)",
}
CAMERA_KEYS = {
    "cameras_at_25fps": "most paced 25 fps cameras held with nothing dropped and no camera behind (by trying)",
    "cameras_tried": "camera counts tried, and whether each held",
}
MAX_TRIALS = 7


def run_engine(bench: Bench, cameras: int, *, paced: bool, seconds: float, min_batches: int = 0) -> dict:
    """`cameras` looped video files through the Engine for `seconds` (and at least
    `min_batches` backbone batches, within a generous bound) -> what happened."""
    videos = bench.videos()
    config = Config()
    config.log.snapshots = None
    # Paced, every recording plays at 25 fps whatever its own rate (a site's 30 fps recording
    # gives its frames at 25 fps): cameras_at_25fps counts cameras of the same rate.
    config.cameras = [CameraConfig(url=str(videos[i % len(videos)]), name=f"cam{i}", loop=True, pace=paced,
                                   fps=FPS if paced else None)
                      for i in range(cameras)]
    publisher = Publisher(f"inproc://bench-{uuid.uuid4().hex}", "bench")
    scored: list[tuple[float, str, float, float]] = []  # (wall, camera, latency, process CPU seconds)
    publisher.add_listener(lambda topic, m: scored.append((time.perf_counter(), m["camera"], m["latency_ms"],
                                                           time.process_time()))
                           if topic.startswith("score.") else None)
    quiet = logging.getLogger("monitor")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    engine = Engine(config, bench.bundle, publisher, None)
    try:
        engine.warm_up()
        engine.start()
        started = time.perf_counter()
        cpu_before, read_before, scored_before = threads.cpu_by_role(), snippets_read(engine), engine.snippets_scored
        engine.wait(seconds)  # looped sources never end: this is the run's length
        limit = started + max(120.0, 10 * seconds)
        while engine.batches < min_batches and engine.error is None and time.perf_counter() < limit:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        roles = threads.since(cpu_before, threads.cpu_by_role())
        read, scored_in_span = snippets_read(engine) - read_before, engine.snippets_scored - scored_before
        with engine._cond:
            dropped = sum(c.dropped for c in engine.cameras)
            behind = max(len(c.pending) for c in engine.cameras)
    finally:
        engine.stop()
        engine.join(3.0)
        engine.close_alerts()  # the alert worker publishes until it is drained: before the socket closes
        publisher.close()
        quiet.setLevel(level)
    if engine.error:
        raise engine.error
    return {"scored": scored, "elapsed": elapsed, "dropped": dropped, "behind": behind,
            "batches": list(engine.batch_sizes), "snippets": engine.snippets_scored,
            "cpu_by_role": roles, "snippets_read": read, "snippets_scored_in_span": scored_in_span}


def snippets_read(engine: Engine) -> int:
    """Snippets the cameras' readers have completed (and prepared) so far."""
    return sum(cam.assembler.snippets for cam in engine.cameras)


def steady_rate(scored: list[tuple]) -> tuple[float, float]:
    """(snippets per second, process CPU seconds per snippet) from the first score published
    to the last, the first burst aside."""
    if len(scored) < 2:
        return 0.0, float("nan")
    ordered = sorted(scored)
    t0, cpu0 = ordered[0][0], ordered[0][3]
    first = sum(1 for entry in ordered if entry[0] - t0 < 1e-3)
    span, cpu = ordered[-1][0] - t0, ordered[-1][3] - cpu0
    n = len(ordered) - first
    return (n / span if span > 0 else 0.0), (cpu / n if n else float("nan"))


def inference_bound(bench: Bench, batches: list[int], cameras: int, budget_s: float) -> tuple[float, float, float]:
    """The engine's batches replayed through the graphs alone, by as many workers at once as
    the engine has -> (snippets, wall seconds, process CPU seconds)."""
    bundle, w = bench.bundle, bench.bundle.manifest.window
    prepared = bench.prepared(max(batches))
    counts = [0] * cameras
    order = itertools.cycle(range(cameras))
    fused = fused_features(bundle, prepared[:1])[0]  # warm-up, and a snippet's features for windows
    jobs = []
    for n in batches:
        lengths = []
        for cam in (next(order) for _ in range(n)):
            counts[cam] += 1
            lengths.append(min(w, counts[cam]))
        jobs.append((n, [np.repeat(fused, length, axis=0) for length in lengths]))
    queue, lock, done = iter(jobs), threading.Lock(), [0]
    t, c = time.perf_counter(), time.process_time()

    def worker():
        while time.perf_counter() - t < budget_s:
            with lock:
                job = next(queue, None)
            if job is None:
                return
            n, windows = job
            out = fused_features(bundle, prepared[:n])[0]
            score_windows(bundle.scores_at, [np.concatenate([win[:-1], out[i:i + 1]]) for i, win in enumerate(windows)])
            with lock:
                done[0] += n

    side_by_side(worker, bundle.workers)()
    return done[0], time.perf_counter() - t, time.process_time() - c


def measure(bench: Bench) -> dict:
    # The bound is timed before and after the engine run and pooled: on a shared machine the
    # load drifts, and the ratio should compare like with like.
    budget = max(1.0, bench.seconds / 4)
    # Unpaced files fill their queues while a batch runs: the engine's batches are that size.
    typical = batch_limit(bench.bundle.manifest, min(Config().engine.max_batch, bench.cameras * Config().engine.max_pending),
                          bench.bundle.workers)
    before = inference_bound(bench, [typical] * 64, bench.cameras, budget)
    run = run_engine(bench, bench.cameras, paced=False, seconds=bench.seconds, min_batches=4)
    rate, engine_cpu = steady_rate(run["scored"])
    batches = run["batches"] or [1]
    after = inference_bound(bench, batches, bench.cameras, budget)
    done, spent, cpu = (a + b for a, b in zip(before, after))
    bound = done / spent if spent else 0.0
    bound_cpu = cpu / done if done else float("nan")
    cores = bench.results.get("cores") or 1
    roles = run["cpu_by_role"]
    reader = roles["readers"] / run["snippets_read"] if roles and run["snippets_read"] else None
    worker = roles["workers"] / run["snippets_scored_in_span"] if roles and run["snippets_scored_in_span"] else None
    shared_cores = not bench.bundle.backbone_on_gpu  # readers and graphs on the same CPU
    ceiling = bound_cpu / (bound_cpu + reader) if reader is not None and bound_cpu > 0 and shared_cores else None
    efficiency = rate / bound if bound else None
    return {"engine_snippets_per_s": round(rate, 2), "inference_bound_snippets_per_s": round(bound, 2),
            "engine_efficiency": round(efficiency, 3) if efficiency is not None else None,
            "mean_batch": round(float(np.mean(batches)), 2),
            "engine_cpu_ms_per_snippet": round(engine_cpu * 1e3, 1), "inference_cpu_ms_per_snippet": round(bound_cpu * 1e3, 1),
            "engine_efficiency_cpu": round(bound_cpu / engine_cpu, 3) if engine_cpu > 0 else None,
            "cameras_per_core_by_cpu": round(1.0 / (engine_cpu * FPS / bench.geometry.snippet_length), 2)
            if engine_cpu > 0 else None, "cores_used": cores,
            "reader_cpu_ms_per_snippet": round(reader * 1e3, 1) if reader is not None else None,
            "worker_cpu_ms_per_snippet": round(worker * 1e3, 1) if worker is not None else None,
            "engine_efficiency_ceiling": round(ceiling, 3) if ceiling else None,
            "engine_efficiency_net": round(efficiency / ceiling, 3) if ceiling and efficiency is not None else None}


def measure_latency(bench: Bench) -> dict:
    run = run_engine(bench, bench.cameras, paced=True, seconds=bench.seconds)
    per_camera: dict[str, list[float]] = {}
    for _, camera, latency, _ in run["scored"]:
        per_camera.setdefault(camera, []).append(latency)
    steady = [v for values in per_camera.values() for v in values[2:]]  # past the start-up
    steady = steady or [v for values in per_camera.values() for v in values]
    return {"latency_ms_p50": round(float(np.percentile(steady, 50)), 1) if steady else None,
            "latency_ms_p99": round(float(np.percentile(steady, 99)), 1) if steady else None,
            "dropped_at_25fps": run["dropped"]}


def holds(bench: Bench, cameras: int, seconds: float) -> bool:
    """`cameras` paced 25 fps cameras for `seconds`: nothing dropped, no camera more than a
    snippet behind at the end, every camera scored about as many snippets as its video made."""
    run = run_engine(bench, cameras, paced=True, seconds=seconds)
    made = seconds * FPS / bench.geometry.snippet_length
    counts = {}
    for _, camera, _, _ in run["scored"]:
        counts[camera] = counts.get(camera, 0) + 1
    kept_up = len(counts) == cameras and min(counts.values()) >= made - 3
    return run["dropped"] == 0 and run["behind"] <= 1 and kept_up


def measure_cameras(bench: Bench) -> dict:
    per_camera = FPS / bench.geometry.snippet_length  # snippets per second a camera makes
    bound = bench.results.get("inference_bound_snippets_per_s") or per_camera
    guess = int(bound / per_camera)  # the graphs' limit: an upper bound, usually
    # The engine run's CPU time per snippet covers decoding and resizing too, which at a
    # camera's full resolution can cost more than the graphs: the lower of the two to start.
    by_cpu = (bench.results.get("cameras_per_core_by_cpu") or 0) * (bench.results.get("cores_used") or 1)
    if by_cpu >= 1:
        guess = min(guess, int(by_cpu))
    guess = max(1, guess)
    seconds = max(3.0, bench.seconds)
    good, bad, tried = 0, None, []
    cameras = guess
    for _ in range(MAX_TRIALS):
        ok = holds(bench, cameras, seconds)
        tried.append(f"{cameras}:{'held' if ok else 'failed'}")
        bench.log(f"  {cameras} cameras at 25 fps: {'held' if ok else 'failed'}")
        if ok:
            good = cameras
        else:
            bad = cameras
        if bad is not None and bad - good <= 1:
            break
        cameras = good + 1 if bad is None else (good + bad) // 2
        if cameras < 1:
            break
    return {"cameras_at_25fps": good, "cameras_tried": " ".join(tried)}
