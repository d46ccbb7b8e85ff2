"""Video sources: one reader thread per camera that timestamps every frame, and reopens a
lost or stalled stream with exponential backoff, forever, while the other cameras go on.

A source URL is one of:
- a camera index (`0`) or a device path (`/dev/video0`);
- an RTSP/HTTP(S)/RTMP URL, read by OpenCV's FFmpeg backend; the RTSP transport (tcp or udp)
  is chosen per camera through OPENCV_FFMPEG_CAPTURE_OPTIONS, which FFmpeg reads when a
  capture opens, so opens are serialised under a lock;
- a video file (`file:///x.mp4` or a path), optionally looped and paced to its frame rate;
- `synthetic://...`, the embedded camera of monitor.video.synthetic.

Credentials in URLs never leave this module except through `redact`.
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

log = logging.getLogger("monitor.video.sources")

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&;])(?:password|passwd|pass|pwd|token|key|secret|auth|signature|sig)=)[^&;#]*")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
_open_lock = threading.Lock()

# Camera states (published in status and camera.<camera> messages).
STARTING, STREAMING, RECONNECTING, STALLED, ENDED = "starting", "streaming", "reconnecting", "stalled", "ended"


def redact(text: str) -> str:
    """Strip credentials from a URL, or from any text that contains URLs: the user-info part
    (`user:pass@`) and secret-looking query parameters become `***`."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: m.group(1) + "***@", str(text))
    return _SECRET_QUERY.sub(lambda m: m.group(1) + "***", text)


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

    def __init__(self, url: str, transport: str, timeout_s: float):
        self.kind = kind_of(url)
        self.synthetic = None
        self.cap = None
        if self.kind == "synthetic":
            from monitor.video.synthetic import SyntheticCamera  # written by the demo issue; imported only when used
            self.synthetic = SyntheticCamera.from_url(url)
            self.fps = float(self.synthetic.fps)
            return
        timeout_ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        with _open_lock:
            if self.kind == "device":
                target = int(url) if url.strip().isdigit() else url
                cap = cv2.VideoCapture(target)
            else:
                target = file_path(url) if self.kind == "file" else url
                if self.kind == "file" and not os.path.exists(target):
                    raise SourceError(f"{redact(url)}: no such file")
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{transport}"
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{redact(url)}: cannot open")
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 0.0

    def read(self):
        if self.synthetic is not None:
            return self.synthetic.read()
        return self.cap.read()

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
        if state == STREAMING and last is not None and time.time() - last > self.stall_timeout_s:
            return STALLED, f"no frame for {time.time() - last:.1f} s", last
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
                capture = _Capture(self.url, self.transport, self.stall_timeout_s)
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
            if outcome == "ended":
                self._set_state(ENDED, "end of file")
                log.info("%s: end of file after %d frames", self.name, self.frames)
                break
            if outcome == "looped":
                self.on_gap("file looped")  # a snippet does not stitch the end to the start
                log.debug("%s: looped after %d frames", self.name, self.frames)
                continue
            if outcome == "delivered":
                backoff = self.backoff_initial_s  # it worked for a while: start the backoff again
                outcome = "stream ended" if self.kind != "file" else "end of file"
            self.on_gap(outcome)
            self._set_state(RECONNECTING, outcome)
            log.warning("%s: %s; reopening in %.1f s", self.name, outcome, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max_s)

    def _read_all(self, capture: _Capture) -> str:
        """Read until the source ends or fails: 'ended' (a file, not looped), 'delivered' (some
        frames came, then none), or the reason nothing came."""
        fps = self.fps_override or capture.fps or 25.0
        period = 1.0 / fps
        delivered = 0
        next_due = time.monotonic()
        while not self._stop.is_set():
            ok, image = capture.read()
            if not ok or image is None:
                if self.kind in ("file", "synthetic") and delivered:  # a recording (or a timed synthetic) ends
                    if not self.loop:
                        return "ended"
                    return "looped"
                return "delivered" if delivered else "opened but no frame came"
            if self.pace:
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_due = max(next_due + period, time.monotonic() - period)
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
