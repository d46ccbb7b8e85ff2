"""Video sources: one reader thread per camera that timestamps every frame, and reopens a
lost or stalled stream with exponential backoff, forever, while the other cameras go on.

A source URL is one of:
- a camera index (`0`) or a device path (`/dev/video0`);
- an RTSP/HTTP(S)/RTMP URL, read by OpenCV's FFmpeg backend; the RTSP transport (tcp or udp)
  is chosen per camera through OPENCV_FFMPEG_CAPTURE_OPTIONS, which FFmpeg reads when a
  capture opens, so opens are serialised under a lock;
- a video file (`file:///x.mp4` or a path), optionally looped and paced to its frame rate;
- `synthetic://...`, the embedded camera of monitor.video.synthetic.

A live source is judged alive by new frames, not by `read()` returning True (see
monitor.video.liveness): no new frame for the stall timeout is `stalled`, and the stream is
reopened; FFmpeg's own open and read timeouts are set to that timeout, so a dead stream is
noticed in time. Frames larger than `max_frame_pixels` are refused so that a hostile or broken
stream cannot exhaust memory: at open, before any frame is decoded, when the stream says its
size; otherwise on the first such frame (counted). Either way the camera is faulted and retried.

Credentials in URLs never leave this module except through `redact`; the URL that is opened
(placeholders and password files filled in, monitor.video.credentials) lives only in the
reader thread.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from monitor.redaction import redact
from monitor.video.credentials import CredentialError, Credentials, resolve
from monitor.video.liveness import Liveness

log = logging.getLogger("monitor.video.sources")

# OpenCV's `[ WARN ]` lines and FFmpeg's own (`[tcp @ 0x…] Connection refused`) would mix with
# the monitor's log and repeat what it says itself, URLs unredacted: both are kept quiet unless
# the environment asks otherwise (OPENCV_LOG_LEVEL, OPENCV_FFMPEG_LOGLEVEL=32 for FFmpeg's info).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")   # AV_LOG_QUIET; read when FFmpeg first opens
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
MAX_FRAME_PIXELS = 4096 * 4096
FILE_READ_RETRIES = 25  # failed reads in a row before a file is taken to end (damage is skipped)
PACE_CATCH_UP_S = 1.0  # how far a paced file behind its clock may hurry to catch up
# What a folder of recordings holds (calibration, feature extraction).
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".ts", ".3gp"}
_open_lock = threading.Lock()

# Camera states (published in status and camera.<camera> messages).
STARTING, STREAMING, RECONNECTING, STALLED, ENDED = "starting", "streaming", "reconnecting", "stalled", "ended"


def videos_in(folder: str | Path) -> list[Path]:
    """The video files under a folder (by VIDEO_SUFFIXES), in name order."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def kind_of(url: str) -> str:
    """'device', 'stream', 'file' or 'synthetic'."""
    url = url.strip()
    if url.isdigit() or url.startswith("/dev/video"):
        return "device"
    scheme = urlsplit(url).scheme.lower()
    if scheme == "synthetic":
        return "synthetic"
    if scheme in STREAM_SCHEMES:
        return "stream"
    return "file"


def unsupported(url: str) -> str | None:
    """Why a source URL can never be read (an unknown scheme, a negative camera index), or None."""
    url = url.strip()
    if re.fullmatch(r"-\d+", url):
        return f"camera index {url} must be 0 or more"
    scheme = urlsplit(url).scheme.lower()
    if "://" in url and scheme not in STREAM_SCHEMES + ("file", "synthetic"):
        return f"unsupported scheme '{scheme}://' (supported: {', '.join(STREAM_SCHEMES)}, file, synthetic)"
    return None


def file_path(url: str) -> str:
    return urlsplit(url).path if url.startswith("file://") else url


def default_name(url: str, index: int) -> str:
    """A camera name from its URL when the config gives none: the file stem, the host, or cam<i>."""
    kind = kind_of(url)
    if kind == "file":
        stem = Path(file_path(url)).stem
    elif kind == "synthetic":
        stem = urlsplit(url).netloc or "synthetic"
    elif kind == "stream":
        stem = (urlsplit(url).hostname or "") + "-" + (urlsplit(url).path.strip("/").split("/")[-1] or "stream")
    else:
        stem = "camera" + url.strip().replace("/dev/video", "")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")
    return stem or f"cam{index}"


@dataclass
class Frame:
    index: int          # frames read from this camera since it started, across reconnects
    # The frame's time on the source's own clock: for a live source the wall-clock capture
    # time (time.time()); for a file, when reading began plus the frame's position in the
    # video, so that alert times, durations and the policy's cooldown follow the video even
    # when it is read faster than real time.
    ts: float
    image: np.ndarray   # BGR uint8 [H, W, 3]
    received: float | None = None   # wall-clock time it was read (latency); None: ts
    position: float | None = None   # files: seconds into the file; None for live sources

    def __post_init__(self):
        if self.received is None:
            self.received = self.ts


class SourceError(RuntimeError):
    pass


class _Capture:
    """What a reader thread reads from: OpenCV's VideoCapture or the synthetic camera."""

    def __init__(self, url: str, transport: str, timeout_s: float, credentials: Credentials | None = None,
                 max_pixels: int = MAX_FRAME_PIXELS):
        self.kind = kind_of(url)
        self.synthetic = None
        self.cap = None
        self.frame_count = 0
        if self.kind == "synthetic":
            from monitor.video.synthetic import SyntheticCamera  # written by the demo issue; imported only when used
            self.synthetic = SyntheticCamera.from_url(url, keep_ground_truth=False)  # live: memory stays flat
            self.fps = float(self.synthetic.fps)
            return
        shown = redact(url)
        try:
            target_url = resolve(url, credentials)  # secrets from the environment or a file, now
        except CredentialError as exc:
            raise SourceError(f"{shown}: {exc}") from None
        # FFmpeg gives up on an open or a read after this long: a dead stream is noticed in time.
        timeout_ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms,
                  # One decoding thread per camera: cameras decode side by side, and FFmpeg's own
                  # threads cost a quarter more CPU per frame at camera resolutions (bench).
                  cv2.CAP_PROP_N_THREADS, 1]
        with _open_lock:
            if self.kind == "device":
                target = int(url) if url.strip().isdigit() else url
                cap = cv2.VideoCapture(target)
            else:
                target = file_path(target_url) if self.kind == "file" else target_url
                if self.kind == "file" and not os.path.exists(target):
                    raise SourceError(f"{shown}: no such file")
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{transport}"
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{shown}: cannot open" + (" (not a readable video, or damaged)" if self.kind == "file"
                                                          else ""))
        # The stream's size is known once it is open (FFmpeg read it from the stream's headers):
        # too large a stream is refused here, before a frame of it is decoded. A source that
        # does not tell (0 x 0) is held to the same limit on its first frame, in _read_all.
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if width * height > max_pixels:
            cap.release()
            raise SourceError(f"{shown}: frames of {width}x{height} exceed the limit of {max_pixels} pixels "
                              f"(max_frame_pixels); refused at open, before decoding a frame")
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 0.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) if self.kind == "file" else 0
        self.frame_count = int(count) if count and count > 0 else 0

    def read(self):
        if self.synthetic is not None:
            return self.synthetic.read()
        return self.cap.read()

    def position(self) -> tuple[float | None, float | None]:
        """The stream's own clock: (position in ms, position in frames)."""
        if self.cap is None:
            return None, None
        return self.cap.get(cv2.CAP_PROP_POS_MSEC), self.cap.get(cv2.CAP_PROP_POS_FRAMES)

    def release(self):
        if self.cap is not None:
            self.cap.release()
        close = getattr(self.synthetic, "close", None)
        if close:
            close()


class CameraSource:
    """Reads one camera on its own thread and hands every frame to `on_frame(frame)`; calls
    `on_gap(reason)` when the frame sequence breaks (reconnect, resolution change) so that a
    partial snippet is not stitched across it. The thread never dies: errors reopen the source."""

    def __init__(self, name: str, url: str, *, transport: str = "tcp", loop: bool = False,
                 pace: bool | None = None, fps: float | None = None, stall_timeout_s: float = 5.0,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 credentials: Credentials | None = None, max_frame_pixels: int = MAX_FRAME_PIXELS,
                 on_frame=None, on_gap=None):
        self.name = name
        self.url = url
        self.display = redact(url)
        self.kind = kind_of(url)
        self.transport = transport
        self.loop = loop
        # Files are paced when looped (a replay) unless told; cameras, streams and the synthetic
        # camera deliver in real time by themselves.
        self.pace = (loop if pace is None else pace) if self.kind == "file" else False
        self.fps_override = fps
        self.stall_timeout_s = stall_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.credentials = credentials
        self.max_frame_pixels = max_frame_pixels
        self.on_frame = on_frame or (lambda frame: None)
        self.on_gap = on_gap or (lambda reason: None)
        self.live = self.kind != "file" or self.pace  # a live source drops snippets when behind
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{name}", daemon=True)
        self._lock = threading.Lock()
        self._state = STARTING
        self._reason = ""
        self._since = time.time()
        self.frames = 0
        self.repeated_frames = 0   # read again but not new (a stalled stream handing back its last frame)
        self.refused_frames = 0    # larger than max_frame_pixels
        self.skipped_damage = 0    # failed reads inside a file that went on past them
        self.last_frame_ts: float | None = None
        self._epoch: float | None = None   # files: wall-clock time of the first frame (video time 0)
        self.frame_size: tuple[int, int] | None = None
        self._recent: deque = deque(maxlen=256)   # arrival times of recent frames

    # ------------------------------------------------------------------ state
    def _set_state(self, state: str, reason: str = "") -> None:
        with self._lock:
            if state != self._state:
                self._state, self._since = state, time.time()
            self._reason = redact(reason)

    def state(self) -> tuple[str, str, float]:
        """(state, reason, since) with a stall seen from outside: a streaming source whose
        last frame is older than the stall timeout is 'stalled' even while its read blocks."""
        with self._lock:
            state, reason, since = self._state, self._reason, self._since
            last = self.last_frame_ts
        if state == STREAMING and self.live and last is not None and time.time() - last > self.stall_timeout_s:
            return STALLED, f"no new frame for {time.time() - last:.1f} s", last
        return state, reason, since

    def input_fps(self) -> float:
        """Frames per second over the last few seconds."""
        with self._lock:
            recent = [t for t in self._recent if t > time.time() - 5.0]
        if len(recent) < 2 or recent[-1] - recent[0] < 1.0:
            return 0.0  # too short a span to tell (a stream's first frames come in a burst)
        return (len(recent) - 1) / (recent[-1] - recent[0])

    # ------------------------------------------------------------------ thread
    def start(self) -> "CameraSource":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        backoff = self.backoff_initial_s
        while not self._stop.is_set():
            try:
                capture = _Capture(self.url, self.transport, self.stall_timeout_s, self.credentials,
                                   self.max_frame_pixels)
            except Exception as exc:  # any failure to open is retried: cameras come back
                reason = redact(str(exc)) if isinstance(exc, SourceError) else f"{self.display}: {redact(str(exc))}"
                self._set_state(RECONNECTING, reason)
                log.warning("%s: %s; retrying in %.1f s", self.name, reason, backoff)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            try:
                outcome = self._read_all(capture)
            except Exception as exc:
                outcome = f"read failed ({redact(str(exc))})"
            finally:
                capture.release()
            if self._stop.is_set():
                break
            if outcome == "looped":
                self.on_gap("file looped")  # a snippet does not stitch the end to the start
                log.debug("%s: looped after %d frames", self.name, self.frames)
                continue
            if outcome.startswith("ended"):
                why = outcome[len("ended"):].strip(" :")
                self._set_state(ENDED, f"end of file {why}" if why else "end of file")
                if why:
                    log.warning("%s: end of file %s", self.name, why)
                else:
                    log.info("%s: end of file after %d frames", self.name, self.frames)
                break
            if outcome in ("delivered", "stalled"):
                backoff = self.backoff_initial_s  # it worked for a while: start the backoff again
            state = RECONNECTING
            if outcome == "stalled":
                state, outcome = STALLED, f"no new frame for {self.stall_timeout_s:g} s (stream stalled)"
            elif outcome == "delivered":
                outcome = "stream ended" if self.kind != "file" else "end of file"
            self.on_gap(outcome)
            self._set_state(state, outcome)
            log.warning("%s: %s; reopening in %.1f s", self.name, outcome, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max_s)

    def _read_all(self, capture: _Capture) -> str:
        """Read until the source ends or fails: 'ended[: why]' (a file, not looped), 'looped',
        'stalled' (no new frame for the stall timeout), 'delivered' (some frames came, then
        none), or the reason nothing came."""
        fps = self.fps_override or capture.fps or 25.0
        period = 1.0 / fps
        delivered = 0
        failures = 0
        next_due = time.monotonic()
        liveness = Liveness() if self.kind in ("stream", "device") else None
        last_new = time.monotonic()
        while not self._stop.is_set():
            ok, image = capture.read()
            if not ok or image is None:
                if self.kind == "file" and delivered and failures < FILE_READ_RETRIES:
                    failures += 1  # damaged data: the next read may go on past it
                    continue
                if self.kind in ("file", "synthetic") and delivered:  # a recording (or a timed synthetic) ends
                    if not self.loop:
                        short = capture.frame_count and delivered < capture.frame_count - 1
                        return (f"ended: after {delivered} of {capture.frame_count} frames (the file is truncated or "
                                f"damaged)") if short else "ended"
                    return "looped"
                if self.kind == "stream" and delivered and time.monotonic() - last_new >= 0.8 * self.stall_timeout_s:
                    return "stalled"  # the read timed out: the stream is open but sends nothing
                return "delivered" if delivered else "opened but no frame came"
            if failures:
                self.skipped_damage += failures
                log.warning("%s: damaged data in %s: %d unreadable frames skipped", self.name, self.display, failures)
                self.on_gap("damaged data skipped")  # a snippet does not stitch across the damage
                failures = 0
            if liveness is not None and not liveness.fresh(*capture.position(), image):
                self.repeated_frames += 1  # the last frame handed back again: not scored
                if time.monotonic() - last_new > self.stall_timeout_s:
                    return "stalled"
                continue
            last_new = time.monotonic()
            if image.shape[0] * image.shape[1] > self.max_frame_pixels:
                self.refused_frames += 1
                return (f"a frame of {image.shape[1]}x{image.shape[0]} exceeds the limit of {self.max_frame_pixels} "
                        f"pixels (max_frame_pixels)")
            if self.pace:
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                # Behind (a burst of work on this thread): catch up as a camera's buffered stream
                # would, up to PACE_CATCH_UP_S; a longer hold-up is lag the file keeps.
                next_due = max(next_due + period, time.monotonic() - PACE_CATCH_UP_S)
            now = time.time()
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            size = (image.shape[1], image.shape[0])
            if self.frame_size is not None and size != self.frame_size:
                log.warning("%s: resolution changed from %dx%d to %dx%d", self.name, *self.frame_size, *size)
                self.on_gap(f"resolution changed to {size[0]}x{size[1]}")
            self.frame_size = size
            if delivered == 0 and self._state != STREAMING:  # (a looped file stays streaming)
                self._set_state(STREAMING, "")
                log.info("%s: streaming %s at %dx%d, %.1f fps", self.name, self.display, size[0], size[1], fps)
            with self._lock:
                self.last_frame_ts = now
                self._recent.append(now)
            if self.kind == "file":
                # Video time: position in the file, counted on across loops and reopens so the
                # source's clock never runs backwards.
                if self._epoch is None:
                    self._epoch = now
                frame = Frame(self.frames, self._epoch + self.frames / fps, image, received=now,
                              position=delivered / fps)
            else:
                frame = Frame(self.frames, now, image)
            self.frames += 1
            delivered += 1
            self.on_frame(frame)
        return "stopped"
