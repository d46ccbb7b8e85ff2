"""Monitor configuration: a TOML file read with the standard library, validated into typed
dataclasses at start-up. Every key has a default, so an empty file (or none) is valid; a bad
file stops the program with the file, the key and the reason.

Layout (every table optional; see configs/*.toml):

    [monitor]  id, status_interval, camera_debounce_s, log_level, state_dir
    [model]    path, providers, threads, io_binding, window, lookahead
    [engine]   max_batch, max_wait_ms, max_pending, frame_stride, workers
    [publish]  endpoint, connect, high_water_mark, scores
    [log]      events, snapshots, retention_days, max_mb
    [security] curve_key, curve_authorized, curve_server_key (CURVE on the publisher's socket)
    [alerts]   on, off, min_snippets, cooldown_s, smoothing, target_per_day,
               clips, clip_pre_s, clip_post_s, clips_max_mb, clip_width, clip_ring_mb, clip_codec
    [[cameras]] name, url, transport, loop, pace, fps, stall_timeout_s, backoff_initial_s,
                backoff_max_s, max_frame_pixels, username, password_env, password_file, learn_s,
                [cameras.alerts] (the same keys as [alerts], for this camera)
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
DEMO_BUNDLE = Path(__file__).resolve().parent / "demo_bundle"
DEMO_SOURCE = "synthetic://"
TRANSPORTS = ("tcp", "udp")
LOG_LEVELS = ("debug", "info", "warning", "error")


def default_state_dir() -> Path:
    """Where the monitor keeps what it learns (calibrations): $XDG_STATE_HOME/ssrl-monitor,
    else ~/.local/state/ssrl-monitor."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "ssrl-monitor"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, the key and why."""


@dataclass
class AlertSettings:
    on: float | None = None        # start level; None: the bundle's threshold
    off: float | None = None       # end level (hysteresis); None: on - 0.1 (at least 0)
    min_snippets: int | None = None  # minimum duration: consecutive snippets at or above `on`; None: the bundle's
    cooldown_s: float = 10.0       # after an alert ends, no new one starts for this long
    smoothing: int = 1             # moving mean over this many snippets (1: off)
    # An MP4 of each alert (monitor.alerts.clips): the folder (None: no clips), seconds before
    # its start and after its end, the folder's budget (oldest clips removed past it), frames
    # downscaled to at most this width, the frames held per camera for the seconds before an
    # alert, and the FourCC. clips, clips_max_mb and clip_codec are the monitor's, not a camera's.
    clips: str | None = None
    clip_pre_s: float = 5.0
    clip_post_s: float = 5.0
    clips_max_mb: float = 1024.0
    clip_width: int = 480
    clip_ring_mb: float = 128.0
    clip_codec: str = "mp4v"
    target_per_day: float = 1.0    # calibration: false alerts per day the levels are set for

    def resolved(self, threshold: float, min_snippets: int = 1) -> "AlertSettings":
        """Concrete settings: unset keys take the bundle's threshold and minimum duration."""
        on = threshold if self.on is None else self.on
        off = max(0.0, on - 0.1) if self.off is None else self.off
        runs = min_snippets if self.min_snippets is None else self.min_snippets
        return dataclasses.replace(self, on=on, off=min(off, on), min_snippets=runs)


@dataclass
class CameraConfig:
    url: str
    name: str = ""
    transport: str = "tcp"         # RTSP transport: tcp, or udp for servers that only speak it
    loop: bool = False             # files: start again at the end
    pace: bool | None = None       # files: deliver at the file's frame rate (None: when looping)
    fps: float | None = None       # override the source's reported frame rate
    stall_timeout_s: float = 5.0   # no frame for this long: stalled, then reopened
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_frame_pixels: int = 4096 * 4096  # larger frames are refused: a broken stream cannot exhaust memory
    # Credentials kept out of the URL (and so out of the command line): a user name, and the
    # password from an environment variable or a file (read at each open). ${NAME} in the URL
    # is filled from the environment too.
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    learn_s: float = 0.0           # > 0: without a calibration, learn one from this much footage before alerting
    alerts: dict | None = None     # [cameras.alerts]: AlertSettings keys that override [alerts]


@dataclass
class MonitorSection:
    id: str = ""
    status_interval: float = 2.0
    camera_debounce_s: float = 2.0
    log_level: str = "info"
    state_dir: str | None = None   # calibrations; None: default_state_dir()


@dataclass
class ModelSection:
    path: str | None = None        # None: the shipped demo bundle
    providers: list[str] | None = None
    threads: int | None = None
    io_binding: bool | None = None  # None: on where the graphs run on a GPU (CUDA, TensorRT)
    window: int | None = None      # None: the manifest's window
    lookahead: int = 0


@dataclass
class EngineSection:
    max_batch: int = 32            # snippets per backbone call (within engine.MAX_BATCH_BYTES of input)
    max_wait_ms: float = 50.0      # how long a partial batch waits for more snippets
    max_pending: int = 4           # per camera; live sources drop the oldest beyond this
    frame_stride: int = 1          # take every n-th frame into snippets
    workers: int | None = None     # graph runs at once; None: one per core on the CPU (providers.scoring_layout)


@dataclass
class PublishSection:
    endpoint: str = DEFAULT_ENDPOINT
    connect: bool = False          # connect (to a broker's frontend) instead of binding
    high_water_mark: int = 1000
    scores: bool = True            # publish score.<camera> for every snippet


@dataclass
class SecuritySection:
    """CURVE on the publisher's socket (see monitor/messages/keys.py). Values are files (or
    `env:VAR` for a key), never keys themselves."""
    curve_key: str | None = None         # this monitor's key pair: a NAME.key_secret file, or env:VAR
    curve_authorized: str | None = None  # binding: directory of the subscribers' public keys let in
    curve_server_key: str | None = None  # connecting to a broker: the broker's public key file (or env:VAR)


@dataclass
class LogSection:
    events: str = "events.db"      # the SQLite event store (monitor.messages.event_store)
    snapshots: str | None = None   # directory for alert JPEGs; None: no snapshots
    retention_days: float | None = None  # keep the events of the last N days; None: all
    max_mb: float | None = None    # keep at most about N MiB of events, oldest deleted first; None: no limit


@dataclass
class Config:
    monitor: MonitorSection = field(default_factory=MonitorSection)
    model: ModelSection = field(default_factory=ModelSection)
    engine: EngineSection = field(default_factory=EngineSection)
    publish: PublishSection = field(default_factory=PublishSection)
    log: LogSection = field(default_factory=LogSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    cameras: list[CameraConfig] = field(default_factory=list)
    source: str = "<defaults>"
    origins: dict = field(default_factory=dict)  # "publish.endpoint" -> where it was set, for errors

    @property
    def monitor_id(self) -> str:
        # Stable across restarts (the host's name), so that seq continues in the event store.
        return self.monitor.id or socket.gethostname()

    def state_dir(self) -> Path:
        return Path(self.monitor.state_dir) if self.monitor.state_dir else default_state_dir()

    def model_path(self) -> Path:
        return Path(self.model.path) if self.model.path else DEMO_BUNDLE

    def alert_settings(self, camera: CameraConfig) -> AlertSettings:
        """The camera's own [cameras.alerts] keys over the global [alerts]."""
        if camera.alerts is None:
            return self.alerts
        return dataclasses.replace(self.alerts, **camera.alerts)


# ----------------------------------------------------------------------------- validation

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key -> (check, reason); None values are accepted only where the default is None.
_RULES: dict[str, tuple] = {
    "monitor.id": (lambda v: isinstance(v, str), "must be a string"),
    "monitor.status_interval": (lambda v: _number(v) and v > 0, "must be a number of seconds > 0"),
    "monitor.camera_debounce_s": (lambda v: _number(v) and v >= 0, "must be a number of seconds >= 0"),
    "monitor.log_level": (lambda v: v in LOG_LEVELS, f"must be one of {', '.join(LOG_LEVELS)}"),
    "monitor.state_dir": (lambda v: isinstance(v, str) and v, "must be a directory path"),
    "model.path": (lambda v: isinstance(v, str) and v, "must be a bundle directory path"),
    "model.providers": (lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v),
                        "must be a list of provider names such as [\"cuda\", \"cpu\"]"),
    "model.threads": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
    "model.io_binding": (lambda v: isinstance(v, bool), "must be true or false (leave it out: on for GPU providers)"),
    "model.window": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1 (snippets)"),
    "model.lookahead": (lambda v: _integer(v) and v >= 0, "must be an integer >= 0 (snippets)"),
    "engine.max_batch": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
    "engine.max_wait_ms": (lambda v: _number(v) and v >= 0, "must be a number of milliseconds >= 0"),
    "engine.max_pending": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
    "engine.workers": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
    "engine.frame_stride": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
    "publish.endpoint": (lambda v: isinstance(v, str) and "://" in v, "must be a ZeroMQ endpoint such as tcp://127.0.0.1:5556"),
    "publish.connect": (lambda v: isinstance(v, bool), "must be true or false"),
    "publish.high_water_mark": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
    "publish.scores": (lambda v: isinstance(v, bool), "must be true or false"),
    "log.events": (lambda v: isinstance(v, str) and v, "must be a file path"),
    "security.curve_key": (lambda v: isinstance(v, str) and v, "must be a key file path or env:VAR"),
    "security.curve_authorized": (lambda v: isinstance(v, str) and v, "must be a directory path"),
    "security.curve_server_key": (lambda v: isinstance(v, str) and v, "must be a key file path or env:VAR"),
    "log.snapshots": (lambda v: isinstance(v, str), "must be a directory path (\"\" for none)"),
    "log.retention_days": (lambda v: _number(v) and v > 0, "must be a number of days > 0"),
    "log.max_mb": (lambda v: _number(v) and v > 0, "must be a size in MiB > 0"),
    "alerts.on": (lambda v: _number(v) and 0 <= v <= 1, "must be a score in [0, 1]"),
    "alerts.off": (lambda v: _number(v) and 0 <= v <= 1, "must be a score in [0, 1]"),
    "alerts.min_snippets": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
    "alerts.cooldown_s": (lambda v: _number(v) and v >= 0, "must be a number of seconds >= 0"),
    "alerts.smoothing": (lambda v: _integer(v) and v >= 1, "must be an integer >= 1 (snippets; 1 is off)"),
    "alerts.clips": (lambda v: isinstance(v, str), "must be a directory path (\"\" for none)"),
    "alerts.clip_pre_s": (lambda v: _number(v) and 0 <= v <= 300, "must be a number of seconds in [0, 300]"),
    "alerts.clip_post_s": (lambda v: _number(v) and 0 <= v <= 300, "must be a number of seconds in [0, 300]"),
    "alerts.clips_max_mb": (lambda v: _number(v) and v > 0, "must be a size in MiB > 0"),
    "alerts.clip_width": (lambda v: _integer(v) and 32 <= v <= 7680, "must be a width in pixels in [32, 7680]"),
    "alerts.clip_ring_mb": (lambda v: _number(v) and v > 0, "must be a size in MiB > 0"),
    "alerts.clip_codec": (lambda v: isinstance(v, str) and len(v) == 4 and v.isascii(),
                          "must be a four-character FourCC such as \"mp4v\" or \"avc1\""),
    "alerts.target_per_day": (lambda v: _number(v) and v > 0, "must be a number of false alerts per day > 0"),
    "cameras.url": (lambda v: isinstance(v, str) and v.strip(), "must be a non-empty source URL, path or index"),
    "cameras.name": (lambda v: isinstance(v, str) and v and not any(c in v for c in " ./\\"),
                     "must be a non-empty name without spaces, dots or slashes (it becomes a topic)"),
    "cameras.transport": (lambda v: v in TRANSPORTS, f"must be one of {', '.join(TRANSPORTS)}"),
    "cameras.loop": (lambda v: isinstance(v, bool), "must be true or false"),
    "cameras.pace": (lambda v: isinstance(v, bool), "must be true or false"),
    "cameras.fps": (lambda v: _number(v) and v > 0, "must be a frame rate > 0"),
    "cameras.stall_timeout_s": (lambda v: _number(v) and v > 0, "must be a number of seconds > 0"),
    "cameras.backoff_initial_s": (lambda v: _number(v) and v > 0, "must be a number of seconds > 0"),
    "cameras.backoff_max_s": (lambda v: _number(v) and v > 0, "must be a number of seconds > 0"),
    "cameras.max_frame_pixels": (lambda v: _integer(v) and v >= 64 * 64, "must be an integer >= 4096 (width x height)"),
    "cameras.username": (lambda v: isinstance(v, str) and v and not any(c.isspace() for c in v),
                         "must be a non-empty user name without spaces"),
    "cameras.password_env": (lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v),
                             "must be the name of an environment variable (letters, digits, _)"),
    "cameras.password_file": (lambda v: isinstance(v, str) and v, "must be a file path"),
    "cameras.learn_s": (lambda v: _number(v) and v >= 0, "must be a number of seconds >= 0 (0: no learning)"),
}


def _fill(cls, table: dict, prefix: str, rule_prefix: str, source: str):
    """Build dataclass `cls` from a TOML table, refusing unknown keys and bad values."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: key '{prefix}' must be a table")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        where = f"{prefix}.{key}"
        if key not in names:
            raise ConfigError(f"{source}: key '{where}' is not a known setting (known: {', '.join(sorted(names))})")
        check_value(f"{rule_prefix}.{key}", value, f"{source}: key '{where}'")
        kwargs[key] = float(value) if isinstance(value, int) and not isinstance(value, bool) and \
            _field_type(cls, key).startswith("float") else value
    return cls(**kwargs)


def check_value(rule: str, value, where: str) -> None:
    """Apply the rule for setting `rule` (e.g. "alerts.on") to a value from a file or the
    command line; `where` names its origin in the error."""
    check, why = _RULES[rule]
    if not check(value):
        raise ConfigError(f"{where} = {value!r}: {why}")


def _field_type(cls, name: str) -> str:
    return str(next(f.type for f in dataclasses.fields(cls) if f.name == name))


def _alerts(table, prefix: str, source: str) -> AlertSettings:
    alerts = _fill(AlertSettings, table, prefix, "alerts", source)
    if alerts.on is not None and alerts.off is not None and alerts.off > alerts.on:
        raise ConfigError(f"{source}: key '{prefix}.off' = {alerts.off}: must not exceed '{prefix}.on' = {alerts.on}")
    return alerts


def _overrides(alerts: AlertSettings, table: dict) -> dict:
    return {k: getattr(alerts, k) for k in table}


# [alerts] keys that one folder and one writer serve for every camera.
MONITOR_WIDE_ALERT_KEYS = ("clips", "clips_max_mb", "clip_codec")

SECTIONS = {"monitor": MonitorSection, "model": ModelSection, "engine": EngineSection,
            "publish": PublishSection, "log": LogSection, "security": SecuritySection}


def from_dict(data: dict, source: str = "<config>") -> Config:
    config = Config(source=source)
    known = set(SECTIONS) | {"alerts", "cameras"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: key '{key}' is not a known section (known: {', '.join(sorted(known))})")
    for name, cls in SECTIONS.items():
        if name in data:
            setattr(config, name, _fill(cls, data[name], name, name, source))
    if config.log.snapshots == "":
        config.log.snapshots = None
    for key in ("endpoint", "connect"):
        config.origins[f"publish.{key}"] = f"{source}: key 'publish.{key}'"
    for key in data.get("security", {}):
        config.origins[f"security.{key}"] = f"{source}: key 'security.{key}'"
    check_endpoint(config)
    check_key_files(config)  # now rather than at the first bind
    if "alerts" in data:
        config.alerts = _alerts(data["alerts"], "alerts", source)
        if config.alerts.clips == "":
            config.alerts.clips = None
    cameras = data.get("cameras", [])
    if not isinstance(cameras, list):
        raise ConfigError(f"{source}: key 'cameras' must be an array of tables ([[cameras]])")
    for i, table in enumerate(cameras):
        where = f"cameras[{i}]"
        if not isinstance(table, dict) or "url" not in table:
            raise ConfigError(f"{source}: key '{where}.url' is missing (every camera needs a source)")
        # [cameras.alerts] is a table of its own, checked as [alerts] is.
        camera = _fill(CameraConfig, {k: v for k, v in table.items() if k != "alerts"}, where, "cameras", source)
        if "alerts" in table:
            monitor_wide = [k for k in MONITOR_WIDE_ALERT_KEYS if isinstance(table["alerts"], dict) and k in table["alerts"]]
            if monitor_wide:
                raise ConfigError(f"{source}: key '{where}.alerts.{monitor_wide[0]}': set for the whole monitor, "
                                  f"in [alerts], not per camera")
            camera.alerts = _overrides(_alerts(table["alerts"], f"{where}.alerts", source), table["alerts"])
        _check_credentials(camera, f"{source}: key '{where}", table)
        if camera.backoff_max_s < camera.backoff_initial_s:
            raise ConfigError(f"{source}: key '{where}.backoff_max_s' = {camera.backoff_max_s}: must be at least "
                              f"backoff_initial_s = {camera.backoff_initial_s}")
        config.cameras.append(camera)
    name_cameras(config.cameras, source)
    return config


def _check_credentials(camera: CameraConfig, where: str, table: dict) -> None:
    """password_env or password_file, for a network stream whose URL holds no password."""
    if camera.password_env and camera.password_file:
        raise ConfigError(f"{where}.password_file': give password_env or password_file, not both")
    if not (camera.username or camera.password_env or camera.password_file):
        return
    key = next(k for k in ("password_env", "password_file", "username") if k in table)
    scheme = camera.url.split("://", 1)[0].lower() if "://" in camera.url else ""
    if scheme in ("", "file", "synthetic"):
        raise ConfigError(f"{where}.{key}': credentials need a network stream URL (rtsp://, http://, ...), "
                          f"not {camera.url!r}")
    authority = camera.url.split("://", 1)[1].split("/", 1)[0]
    if ":" in authority.rsplit("@", 1)[0] and "@" in authority and (camera.password_env or camera.password_file):
        raise ConfigError(f"{where}.{key}': the URL holds a password already; keep it in one place")


def _value_where(origin: str) -> str:
    """A config key's origin as it prefixes its value in errors: "file: key 'a.b' = 'value'"."""
    return origin + " =" if "key '" in origin else origin


def check_endpoint(config: Config) -> None:
    """The publish endpoint, bound or connected to, is one ZeroMQ can use as meant."""
    from monitor.messages.endpoints import EndpointError, parse

    where = config.origins.get("publish.endpoint", "publish.endpoint")
    try:
        parse(config.publish.endpoint, _value_where(where), bind=not config.publish.connect)
    except EndpointError as exc:
        raise ConfigError(str(exc)) from None


def check_key_files(config: Config) -> None:
    """Each [security] key given names a file (or env:VAR) that holds what it should."""
    sec = config.security
    if not (sec.curve_key or sec.curve_authorized or sec.curve_server_key):
        return
    from monitor.messages import keys

    where = lambda key: _value_where(config.origins.get(f"security.{key}", f"security.{key}"))  # noqa: E731
    try:
        if sec.curve_key:
            keys.load_pair(sec.curve_key, where("curve_key"))
        if sec.curve_authorized:
            keys.load_authorized(sec.curve_authorized, where("curve_authorized"))
        if sec.curve_server_key:
            keys.load_public(sec.curve_server_key, where("curve_server_key"))
    except keys.CurveError as exc:
        raise ConfigError(str(exc)) from None


def curve_settings(config: Config):
    """The [security] keys (or their flags) as the publisher uses them: a keys.CurveServer
    when binding, a keys.CurveClient when connecting to a broker, None without CURVE. Errors
    name the key or flag, the file and the reason."""
    sec = config.security
    if not (sec.curve_key or sec.curve_authorized or sec.curve_server_key):
        return None
    from monitor.messages import keys

    origin = lambda key: config.origins.get(f"security.{key}", f"security.{key}")  # noqa: E731
    try:
        if not sec.curve_key:
            given = "curve_authorized" if sec.curve_authorized else "curve_server_key"
            raise keys.CurveError(f"{origin(given)}: CURVE needs this monitor's key pair too (security.curve_key "
                                  f"or --curve-key: a NAME.key_secret file from 'run_monitor.py keys')")
        pair = keys.load_pair(sec.curve_key, _value_where(origin("curve_key")))
        if config.publish.connect:
            if not sec.curve_server_key:
                raise keys.CurveError(f"{origin('curve_key')}: connecting to a broker with CURVE needs the broker's "
                                      f"public key (security.curve_server_key or --curve-server-key)")
            server = keys.load_public(sec.curve_server_key, _value_where(origin("curve_server_key")))
            return keys.CurveClient(pair, server, sec.curve_server_key)
        if not sec.curve_authorized:
            raise keys.CurveError(f"{origin('curve_key')}: publishing with CURVE needs the subscribers allowed in "
                                  f"(security.curve_authorized or --curve-authorized: a directory of their "
                                  f"NAME.key files)")
        allowed = keys.load_authorized(sec.curve_authorized, _value_where(origin("curve_authorized")))
        return keys.CurveServer(pair, allowed, sec.curve_authorized)
    except keys.CurveError as exc:
        raise ConfigError(str(exc)) from None


def name_cameras(cameras: list[CameraConfig], source: str = "<config>") -> None:
    """Give unnamed cameras names (cam0, cam1 ...) and refuse duplicates."""
    seen = set()
    for i, camera in enumerate(cameras):
        if not camera.name:
            n = i
            while f"cam{n}" in seen or any(c.name == f"cam{n}" for c in cameras):
                n += 1
            camera.name = f"cam{n}"
        if camera.name in seen:
            raise ConfigError(f"{source}: key 'cameras[{i}].name' = {camera.name!r}: used by another camera")
        seen.add(camera.name)


def load(path: str | Path | None) -> Config:
    """Read and validate a TOML file; None gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return from_dict(data, source=str(path))
