"""run_monitor.py [run]: score live cameras, publish scores and alerts, log alerts.

With no --config, --source or --model it runs the embedded default: the synthetic camera
and the shipped demo bundle, publishing on tcp://127.0.0.1:5556.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from monitor.commands.publish_args import add_curve_arguments, apply_publish_flags
from monitor.config import LOG_LEVELS, TRANSPORTS
from monitor.errors import refuse
from monitor.messages.health import judge
from monitor.messages.service_notify import ServiceNotifier

HELP = "score cameras, streams or files live; publish scores and alerts on ZeroMQ (the default command)"
log = logging.getLogger("monitor")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration (see configs/); options below override it")
    p.add_argument("--source", action="append", metavar="[NAME=]URL",
                   help="a camera index, device, RTSP/HTTP URL, video file or synthetic://; repeat for several "
                        "cameras (replaces the config's cameras)")
    p.add_argument("--model", help="model bundle directory (default: the config's, else the shipped demo bundle)")
    p.add_argument("--publish", metavar="ENDPOINT", help="ZeroMQ endpoint to bind (default tcp://127.0.0.1:5556)")
    p.add_argument("--connect", metavar="ENDPOINT", help="connect to a broker's frontend instead of binding")
    add_curve_arguments(p)
    p.add_argument("--no-dashboard", action="store_true", help="plain log lines even on a terminal")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--providers", help="execution providers in order, e.g. 'cuda,cpu' (default: best available)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per graph run")
    p.add_argument("--workers", type=int, help="graph runs at once (default: one per core, one thread each, on the "
                                                "CPU; one on a GPU)")
    p.add_argument("--monitor-id", help="this monitor's id in messages and the event store (default: the host "
                                        "name; give each monitor on one host its own)")
    p.add_argument("--events", metavar="FILE", help="alert event store (SQLite; default events.db)")
    p.add_argument("--snapshots", help="directory for a JPEG of each alert's first snippet")
    p.add_argument("--clips", metavar="DIR", help="directory for an MP4 of each alert, a few seconds either side "
                                                 "(config [alerts] clips, clip_pre_s, clip_post_s, clips_max_mb)")
    p.add_argument("--state", metavar="DIR", help="state directory: cameras' calibrations (default: the config's "
                                                  "monitor.state_dir, else ~/.local/state/ssrl-monitor)")
    p.add_argument("--threshold", type=float, help="alert on level (default: the bundle's)")
    p.add_argument("--off-threshold", type=float, help="alert off level (default: on - 0.1)")
    p.add_argument("--window", type=int, help="snippets in the temporal window (default: the bundle's)")
    p.add_argument("--lookahead", type=int, help="report snippet t-d with d snippets of future context")
    p.add_argument("--max-batch", type=int, help="snippets per backbone call")
    p.add_argument("--loop", action="store_true", help="--source files: loop them (and pace to their fps)")
    p.add_argument("--transport", choices=TRANSPORTS, help="--source RTSP transport (default tcp)")
    p.add_argument("--status-interval", type=float, help="seconds between status messages (default 2)")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="default info")


def _camera_specs(sources: list[str]) -> list[tuple[str, str]]:
    """'NAME=URL' or 'URL' -> (name or '', url)."""
    out = []
    for s in sources:
        m = re.match(r"^([A-Za-z0-9_-]+)=(.+)$", s)
        if m and "://" not in m.group(1):
            out.append((m.group(1), m.group(2)))
        else:
            out.append(("", s))
    return out


def build_config(args: argparse.Namespace):
    """The config file with the command line on top."""
    from monitor import config as cfgmod
    from monitor.video.sources import default_name

    config = cfgmod.load(args.config)
    if args.source:
        config.cameras = [cfgmod.CameraConfig(url=url, name=name, loop=args.loop, transport=args.transport or "tcp")
                          for name, url in _camera_specs(args.source)]
    elif not config.cameras:
        config.cameras = [cfgmod.CameraConfig(url=cfgmod.DEMO_SOURCE, name="")]
    taken = {c.name for c in config.cameras if c.name}
    for i, camera in enumerate(config.cameras):
        if not camera.name:
            base = name = default_name(camera.url, i)
            n = 1
            while name in taken:
                name, n = f"{base}{n}", n + 1
            camera.name = name
            taken.add(name)
    cfgmod.name_cameras(config.cameras, "command line" if args.source else config.source)
    # Options are held to the rules of the settings they override.
    for option, rule in (("threshold", "alerts.on"), ("off_threshold", "alerts.off"), ("window", "model.window"),
                         ("max_batch", "engine.max_batch"), ("threads", "model.threads"), ("workers", "engine.workers"),
                         ("lookahead", "model.lookahead")):
        value = getattr(args, option)
        if value is not None:
            cfgmod.check_value(rule, value, f"command line: --{option.replace('_', '-')}")
    if args.model:
        config.model.path = args.model
    # Providers are checked here, where we know who asked for them, rather than when the first
    # graph loads (which would blame the graph file for a bad flag).
    from monitor.model.providers import ProviderError, from_flag, resolve
    try:
        if args.providers:
            config.model.providers = from_flag(args.providers)
        elif config.model.providers:
            try:
                resolve(config.model.providers)
            except ProviderError as exc:
                raise ProviderError(f"{args.config}: [model] providers: {exc}") from exc
    except ProviderError as exc:
        raise cfgmod.ConfigError(str(exc)) from exc
    for key, target in (("threads", "threads"), ("window", "window"), ("lookahead", "lookahead")):
        if getattr(args, key) is not None:
            setattr(config.model, target, getattr(args, key))
    if args.max_batch:
        config.engine.max_batch = args.max_batch
    if args.workers:
        config.engine.workers = args.workers
    apply_publish_flags(config, args)
    if args.monitor_id:
        config.monitor.id = args.monitor_id
    if args.events:
        config.log.events = args.events
    if args.snapshots:
        config.log.snapshots = args.snapshots
    if args.clips:
        config.alerts.clips = args.clips
    if args.state:
        config.monitor.state_dir = args.state
    if args.threshold is not None:
        config.alerts.on = args.threshold
    if args.off_threshold is not None:
        config.alerts.off = args.off_threshold
    if config.alerts.on is not None and config.alerts.off is not None and config.alerts.off > config.alerts.on:
        raise cfgmod.ConfigError(f"alert off level {config.alerts.off} is above the on level {config.alerts.on}")
    if args.status_interval:
        config.monitor.status_interval = args.status_interval
    if args.log_level:
        config.monitor.log_level = args.log_level
    return config


def _check_sources(config) -> str | None:
    """Problems that retrying cannot fix, found before anything starts. A missing file or
    device among several cameras is only warned about: it is retried with backoff (a
    recording may land later, a camera be plugged in) while the others run; when no camera
    has a source there at all, there is nothing to run."""
    from monitor.redaction import redact
    from monitor.video.credentials import CredentialError, Credentials, check
    from monitor.video.sources import file_path, kind_of, unsupported
    missing = []
    for camera in config.cameras:
        where = f"camera '{camera.name}': {redact(camera.url)}"
        why = unsupported(camera.url)
        if why:
            return f"{where}: {why}"
        kind = kind_of(camera.url)
        if kind == "file":
            path = Path(file_path(camera.url))
            if path.is_dir():
                return f"{where}: is a directory, not a video file"
            if not path.is_file():
                missing.append(f"{where}: no such video file")
        if kind == "device" and camera.url.strip().isdigit() and not Path(f"/dev/video{camera.url.strip()}").exists():
            missing.append(f"{where}: no such camera device (/dev/video{camera.url.strip()})")
        if kind in ("stream", "device"):
            try:
                check(camera.url, Credentials(camera.username, camera.password_env, camera.password_file))
            except CredentialError as exc:
                return f"{where}: {exc}"
        if kind == "synthetic":
            try:
                from monitor.video.synthetic import SyntheticCamera
            except ModuleNotFoundError:
                return (f"camera '{camera.name}': synthetic:// needs monitor/video/synthetic.py (the embedded camera), "
                        f"which this build lacks")
            try:
                SyntheticCamera.from_url(camera.url).release()
            except ValueError as exc:
                return f"camera '{camera.name}': {exc}"
    if missing and len(missing) == len(config.cameras):
        return missing[0] if len(missing) == 1 else f"no camera has a source: {'; '.join(missing)}"
    for problem in missing:
        log.warning("%s; retrying with backoff while the other cameras run", problem)
    return None


class _RedactingFormatter(logging.Formatter):
    """The last guard: whatever a log line holds (an exception's text, a library's message),
    credentials go through the one rule before it is written."""

    def format(self, record: logging.LogRecord) -> str:
        from monitor.redaction import redact
        return redact(super().format(record))


def _setup_logging(level: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    return handler


def _levels(camera: dict) -> str:
    """Where a camera's alert levels come from, for the status line."""
    cal = camera.get("calibration") or {}
    if cal.get("source") == "learning":
        return f" learning {cal.get('footage_s') or 0:.0f}/{cal.get('learn_s') or 0:.0f} s"
    return f" on {camera['threshold']:.3f} ({cal.get('source', 'bundle')})" if camera.get("threshold") is not None else ""


def _status_line(topic: str, message: dict) -> None:
    """Without a dashboard: one log line per status heartbeat."""
    if topic != "status":
        return
    parts = []
    for c in message["cameras"]:
        lat = "-" if c["latency_ms"] is None else f"{c['latency_ms']:.0f} ms"
        score = "-" if c["score"] is None else f"{c['score']:.3f}"
        parts.append(f"{c['camera']} {c['state']} {c['input_fps']:.1f} fps in, {c['processing_fps']:.1f} fps scored "
                     f"({c['snippets_per_s']:.2f} snip/s) "
                     f"latency {lat} score {score}{' ALERT' if c['in_alert'] else ''}{_levels(c)}"
                     f"{' dropped ' + str(c['dropped_snippets']) if c['dropped_snippets'] else ''}")
    log.info("status: %s", " | ".join(parts) or "no cameras")


def _summary(engine, config) -> str:
    """The last line on the terminal, dashboard or not: alerts raised and where they are kept."""
    counts = [(c.name, c.policy.count) for c in engine.cameras]
    total = sum(n for _, n in counts)
    per = ", ".join(f"{name} {n}" for name, n in counts if n)
    parts = [f"{total} alert{'s' if total != 1 else ''} raised" + (f" ({per})" if per else ""),
             f"events in {Path(config.log.events).resolve()}"]
    if config.log.snapshots:
        parts.append(f"snapshots in {Path(config.log.snapshots).resolve()}")
    if config.alerts.clips:
        parts.append(f"clips in {Path(config.alerts.clips).resolve()}")
    return "summary: " + "; ".join(parts)


class ServiceWatch:
    """What the service manager hears (monitor/messages/service_notify.py): ready once started,
    the health line of each status message, and watchdog pings while scoring goes round."""

    def __init__(self, notifier, engine, publisher):
        self.notifier, self.engine = notifier, engine
        self._next_ping = 0.0
        self._status: dict | None = None
        if notifier.active:
            publisher.add_listener(self._heard)

    def _heard(self, topic: str, message: dict) -> None:
        if topic == "status":
            self._status = message

    def started(self) -> None:
        if self.notifier.active:
            log.info("service manager: notifying %s%s", self.notifier.address,
                     f", watchdog every {self.notifier.watchdog_s:g} s" if self.notifier.watchdog_s else "")
        self.notifier.ready(f"scoring {len(self.engine.cameras)} camera(s)")

    def tick(self) -> None:
        """From the main loop, every 0.1 s."""
        status, self._status = self._status, None
        if status is not None:
            self.notifier.status(judge(status).line())
        period = self.notifier.watchdog_s
        now = time.monotonic()
        if period and now >= self._next_ping:
            # Ping twice within the period, and only while every scoring worker goes round
            # within it: a hung engine (or a dead worker) lets the period run out.
            if self.engine.scoring_alive(period):
                self.notifier.watchdog()
            self._next_ping = now + period / 2

    def stopping(self) -> None:
        self.notifier.stopping()
        self.notifier.close()


def run(args: argparse.Namespace) -> int:
    from monitor.model.bundle import Bundle
    from monitor import config as cfgmod
    from monitor.config import DEMO_BUNDLE, ConfigError
    from monitor.engine import Engine
    from monitor.messages.event_store import EventStore, StoreError
    from monitor.model.manifest import BundleError
    from monitor.video.preprocess import GeometryError
    from monitor.model.providers import ProviderError
    from monitor.messages.publisher import PublishError, Publisher
    from monitor.alerts.calibration import marked_false
    from monitor.alerts.calibration_store import CalibrationStore

    # A signal from here on stops the monitor cleanly (a load or warm-up in progress finishes
    # first): exit code 0 for SIGTERM (a service manager's stop), 130 for SIGINT (Ctrl-C).
    stop = threading.Event()
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: (received.append(signum), stop.set()))
    try:
        config = build_config(args)
        curve = cfgmod.curve_settings(config)
    except ConfigError as exc:
        refuse(exc, getattr(args, "debug", False))
        return 2
    handler = _setup_logging("debug" if getattr(args, "debug", False) else config.monitor.log_level)
    model_path = config.model_path()
    if model_path == DEMO_BUNDLE and not (DEMO_BUNDLE / "manifest.json").is_file():
        print(f"error: the shipped demo bundle is missing ({DEMO_BUNDLE}): this build has no demo model yet. "
              f"Give --model DIR (a bundle from python -m export or python -m training.demo).", file=sys.stderr)
        return 2
    problem = _check_sources(config)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        bundle = Bundle(model_path, providers=config.model.providers, threads=config.model.threads,
                        io_binding=config.model.io_binding, workers=config.engine.workers)
    except (BundleError, ProviderError) as exc:
        refuse(exc, getattr(args, "debug", False))
        return 2
    # The store first: it hands out the seq numbers, continuing those of earlier runs.
    try:
        event_log = EventStore(config.log.events, retention_days=config.log.retention_days,
                               max_mb=config.log.max_mb)
    except StoreError as exc:
        return refuse(exc, getattr(args, "debug", False), prefix="event store: ")
    try:
        sequence = event_log.sequence(config.monitor_id)
    except StoreError as exc:
        event_log.close()
        return refuse(exc, getattr(args, "debug", False), prefix="event store: ")
    try:
        publisher = Publisher(config.publish.endpoint, config.monitor_id, connect=config.publish.connect,
                              high_water_mark=config.publish.high_water_mark, sequence=sequence, curve=curve)
    except PublishError as exc:
        exc.args = (f"{config.origins.get('publish.endpoint', 'publish.endpoint')}: {exc}",)  # which flag or key
        refuse(exc, getattr(args, "debug", False))
        event_log.close()
        return 2
    try:
        engine = Engine(config, bundle, publisher, event_log, calibrations=CalibrationStore(config.state_dir()),
                        false_alerts=lambda camera: marked_false(event_log, camera))
        engine.warm_up()
    except (BundleError, GeometryError, ValueError, StoreError) as exc:
        refuse(exc, getattr(args, "debug", False))
        event_log.close()
        publisher.close()
        return 2
    event_log.apply_retention()
    event_log.start_maintenance()
    if engine.model_warning:
        log.warning("%s", engine.model_warning)  # once; the status messages and the dashboard repeat it


    dashboard = None
    if sys.stdout.isatty() and not args.no_dashboard:
        try:
            from monitor.dashboard.app import attach_dashboard
        except ModuleNotFoundError:
            log.warning("no dashboard in this build: plain log lines")
        else:
            info = engine.info()
            info["stop"] = stop.set  # the dashboard's quit key stops the monitor
            # f / t on the selected alert: the operator's verdict, in this monitor's store.
            info["mark"] = lambda alert_id, monitor, verdict: event_log.mark(alert_id, verdict, monitor=monitor)
            dashboard = attach_dashboard(publisher, info)
            handler.setLevel(logging.ERROR)  # log lines would tear the live screen
    if dashboard is None:
        publisher.add_listener(_status_line)

    log.info("monitor %s: model %s (stage %d, %s, %d worker(s) x %d thread(s)), window %d, look-ahead %d; "
             "publishing on %s (%s); events -> %s (seq from %d)", config.monitor_id, engine.model_info["name"],
             bundle.manifest.stage, bundle.providers[0], bundle.workers, bundle.threads, engine.window,
             engine.lookahead, publisher.endpoint,
             "connect" if config.publish.connect else "bind", config.log.events, sequence.first)
    engine.start()
    service = ServiceWatch(ServiceNotifier.from_environment(), engine, publisher)
    service.started()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    code = 0
    try:
        while not stop.wait(0.1):
            service.tick()
            if engine.wait(0):
                if engine.error is not None:
                    code = 1
                else:
                    log.info("every source has ended; stopping")
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        # Within 2 s of a signal: stop reading and scoring, end open alerts, flush the log.
        service.stopping()
        engine.stop()
        clean = engine.join(1.0)
        engine.close_alerts()
        try:
            engine.publish_status()
        except Exception:
            pass
        event_log.close()
        if dashboard is not None:
            dashboard.stop()
            handler.setLevel(logging.NOTSET)  # the terminal is back: what follows stays on it
        publisher.close()
        sizes = list(engine.batch_sizes)
        log.info("stopped; %d snippets in %d batches (mean %.2f, max %d snippets per batch, %d shared by "
                 "cameras), %d dropped; %d alert events in %s%s", engine.snippets_scored, engine.batches,
                 sum(sizes) / len(sizes) if sizes else 0.0, max(sizes) if sizes else 0, engine.shared_batches,
                 sum(c.dropped for c in engine.cameras), event_log.written, config.log.events,
                 f" ({event_log.not_stored} could not be stored when published)" if event_log.not_stored else "")
        log.info("%s", _summary(engine, config))
    if code == 0 and received and received[0] == signal.SIGINT:
        code = 130
    if not clean:
        # A reader is stuck in a blocking read of a dead stream: everything is flushed, and
        # waiting for it (or letting the interpreter tear it down) could hang or abort.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
