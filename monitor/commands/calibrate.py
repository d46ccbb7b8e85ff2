"""run_monitor.py calibrate --source [NAME=]URL [--duration S] --target-per-day N: learn a
camera's alert levels from its own normal footage and store them for the monitor.

The footage (a file, a stream, or a folder of the camera's recordings) is scored by the live
engine itself (monitor.engine: the same preprocessing, backbone, spatial and temporal graphs
and sliding window), the policy's start statistic is fitted (monitor.alerts.calibration), and
the result goes to the state directory under the camera's name and the bundle's SHA, where
`run_monitor.py` finds it at start. Files are read as fast as they decode; a live source
runs for --duration seconds, or until Ctrl-C.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

HELP = "learn a camera's alert levels from its normal footage for a target of false alerts per day"
log = logging.getLogger("monitor.calibrate")
PROGRESS_S = 5.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, metavar="[NAME=]URL",
                   help="the camera's normal footage: a video file, a folder of its recordings, a stream or "
                        "device; NAME is the camera's name in the monitor (default: from the URL)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="seconds of footage to learn from (default: all of the files; a live source: until Ctrl-C)")
    p.add_argument("--target-per-day", type=float, metavar="N",
                   help="false alerts per day to calibrate for (default: the config's alerts.target_per_day, 1)")
    p.add_argument("--model", help="model bundle directory (default: the config's, else the shipped demo bundle)")
    p.add_argument("--state", metavar="DIR", help="state directory to store the calibration in "
                                                  "(default: the config's monitor.state_dir, else ~/.local/state/ssrl-monitor)")
    p.add_argument("--events", metavar="FILE", help="the event store whose alerts marked false join the footage "
                                                   "(default: the config's [log] events, else events.db)")
    p.add_argument("--config", type=Path, help="TOML configuration: the camera's alert settings (smoothing, "
                                               "min_snippets), engine and state settings")
    p.add_argument("--providers", help="execution providers in order, e.g. 'cuda,cpu'")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per graph")
    p.add_argument("--transport", choices=("tcp", "udp"), help="RTSP transport (default tcp)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def _footage_items(camera) -> list[str]:
    """A folder: its video files in name order; anything else: itself."""
    from monitor.video.sources import VIDEO_SUFFIXES, file_path, kind_of, videos_in
    if kind_of(camera.url) == "file":
        path = Path(file_path(camera.url))
        if path.is_dir():
            files = [str(p) for p in videos_in(path)]
            if not files:
                raise ValueError(f"--source {camera.url}: no video files in this folder "
                                 f"({', '.join(sorted(VIDEO_SUFFIXES))})")
            return files
        if not path.is_file():
            raise ValueError(f"--source {camera.url}: no such video file or folder")
    return [camera.url]


def _camera(args, config):
    from monitor import config as cfgmod
    from monitor.commands.run import _camera_specs
    from monitor.video.sources import default_name
    (name, url), = _camera_specs([args.source])
    name = name or default_name(url, 0)
    cfgmod.check_value("cameras.name", name, "--source NAME")
    configured = next((c for c in config.cameras if c.name == name), None)
    camera = replace(configured, url=url) if configured else cfgmod.CameraConfig(url=url, name=name)
    if args.transport:
        camera.transport = args.transport
    # Footage is read once, as fast as it comes; learning is the whole point here.
    return replace(camera, loop=False, pace=False, learn_s=0.0)


def _score(bundle, config, camera, items, duration, stop) -> list:
    """Run the engine over each item in turn and collect what the camera scored."""
    from monitor.engine import Engine
    from monitor.messages.publisher import Publisher
    footage, learnt = [], 0.0
    for i, url in enumerate(items):
        if stop.is_set() or (duration is not None and learnt >= duration):
            break
        # Only scores: no clips, snapshots or event store while learning.
        one = replace(config, cameras=[replace(camera, url=url)], alerts=replace(config.alerts, clips=None),
                      log=replace(config.log, snapshots=None))
        publisher = Publisher(f"inproc://calibrate-{os.getpid()}-{i}", config.monitor_id)
        try:
            engine = Engine(one, bundle, publisher, learn_only=True)
            if i == 0:
                engine.warm_up()
            learner = engine.cameras[0].learner
            engine.start()
            next_note = time.monotonic() + PROGRESS_S
            try:
                while not stop.wait(0.1):
                    if engine.wait(0):
                        break
                    if duration is not None and learnt + learner.footage_s >= duration:
                        break
                    if time.monotonic() >= next_note:
                        next_note += PROGRESS_S
                        log.info("%s: %.0f s of footage scored (%d snippets)%s", camera.name,
                                 learnt + learner.footage_s, learner.snippets,
                                 f", file {i + 1} of {len(items)}" if len(items) > 1 else "")
            finally:
                engine.stop()
                engine.join(2.0)
            if engine.error is not None:
                raise RuntimeError(f"scoring failed: {engine.error}")
            pieces = learner.footage(engine.cameras[0].source.display, None if duration is None else duration - learnt)
            footage += pieces
            learnt += sum(p.seconds for p in pieces)
            log.info("%s: %s: %.0f s, %d snippets", camera.name, engine.cameras[0].source.display,
                     sum(p.seconds for p in pieces), sum(len(p.scores) for p in pieces))
        finally:
            publisher.close()
    return footage


def run(args: argparse.Namespace) -> int:
    from monitor import config as cfgmod
    from monitor.alerts import calibration as calib
    from monitor.alerts.calibration_store import CalibrationStore
    from monitor.commands.run import _setup_logging
    from monitor.errors import ArgumentError, refuse
    from monitor.model.bundle import Bundle
    from monitor.model.fingerprint import bundle_sha
    from monitor.model.manifest import BundleError
    from monitor.model.providers import ProviderError
    from monitor.messages.event_store import StoreError
    from monitor.video.preprocess import GeometryError
    import re

    try:
        config = cfgmod.load(args.config)
        camera = _camera(args, config)
        if args.target_per_day is not None:
            cfgmod.check_value("alerts.target_per_day", args.target_per_day, "command line: --target-per-day")
        if args.duration is not None and not args.duration > 0:
            raise cfgmod.ConfigError(f"command line: --duration = {args.duration}: must be a number of seconds > 0")
        if args.threads is not None:
            cfgmod.check_value("model.threads", args.threads, "command line: --threads")
        items = _footage_items(camera)
    except (cfgmod.ConfigError, ValueError) as exc:
        return refuse(exc, args.debug)
    _setup_logging(args.log_level)
    if args.model:
        config.model.path = args.model
    if args.state:
        config.monitor.state_dir = args.state
    providers = [p for p in re.split(r"[,\s]+", args.providers) if p] if args.providers else config.model.providers
    settings = config.alert_settings(camera)
    target = args.target_per_day if args.target_per_day is not None else settings.target_per_day
    try:
        bundle = Bundle(config.model_path(), providers=providers, threads=args.threads or config.model.threads,
                        workers=config.engine.workers)
    except (BundleError, ProviderError) as exc:
        return refuse(exc, args.debug)
    sha = bundle_sha(bundle.path, bundle.manifest)
    store = CalibrationStore(config.state_dir())

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("calibrating camera %s for %g false alert(s)/day with %s (bundle %s) on %d item(s) of footage",
             camera.name, target, bundle.path, sha[:16], len(items))
    try:
        footage = _score(bundle, config, camera, items, args.duration, stop)
    except (BundleError, GeometryError, RuntimeError) as exc:
        refuse(exc, args.debug)
        return 1
    if args.events:
        config.log.events = args.events
    try:
        marked = _alerts_marked_false(Path(config.log.events), camera.name)
    except StoreError as exc:
        return refuse(exc, args.debug, prefix="event store: ")
    try:
        cal = calib.calibrate_camera(footage, marked, camera=camera.name, bundle_sha=sha, settings=settings,
                                     manifest=bundle.manifest, target_per_day=target,
                                     sources=[f.label for f in footage])
    except calib.CalibrationError as exc:
        return refuse(exc, args.debug)
    try:
        path = store.save(cal)
    except OSError as exc:
        raise ArgumentError(f"state directory {store.root}: cannot write the calibration ({exc.strerror or exc})") \
            from exc
    print(f"{camera.name}: {cal.summary()}")
    print(f"stored in {path} (bundle {sha[:16]}); `run_monitor.py` uses it for camera {camera.name} with this bundle")
    return 0


def _alerts_marked_false(path: Path, camera: str) -> list[dict]:
    """End messages of the camera's alerts an operator marked false; none without a store."""
    from monitor.alerts.calibration import marked_false
    from monitor.messages.event_store import EventStore
    if not path.is_file():
        log.info("%s: no event store at %s: no alerts marked false to learn from", camera, path)
        return []
    store = EventStore(path, readonly=True)
    try:
        return marked_false(store, camera)
    finally:
        store.close()
