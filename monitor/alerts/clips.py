"""A short MP4 of every alert: from `pre_s` before its first frame to `post_s` after its last.

Per camera, a bounded ring of recent frames (downscaled to at most `width` pixels wide, kept
as they are: no encoding on the reader's thread) covers the seconds before an alert starts;
it is bounded by time (`pre_s` plus DETECTION_SLACK_S, how long an alert may take to be
recognised after its first frame) and by bytes. When an alert starts, the ring's frames from
`pre_s` before it go to the writer, and every frame after them follows while the clip is open;
when the alert ends, the clip closes at the first frame more than `post_s` after its last frame
(or when the camera ends or the monitor stops). One writer thread encodes every camera's clips
with cv2.VideoWriter, off the readers' and the scoring thread: a clip is written as
`<alert id>.partial.mp4` and renamed `<alert id>.mp4` once complete. After each clip the
folder is held under `max_bytes`: the oldest clips go first (the newest is always kept).

Times are the source's own clock (Frame.ts: wall clock live, video time for files), the one
the alert's times use; frame indices tie an alert's frame range to the ring's frames.

This module imports nothing from the rest of the monitor: the engine hands it frames
(numpy arrays) and alert events (dicts).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("monitor.alerts.clips")

DETECTION_SLACK_S = 20.0   # an alert is recognised at most this long after its first frame
PARTIAL = ".partial.mp4"
FALLBACK_FPS = 15.0


@dataclass(frozen=True)
class ClipSettings:
    directory: Path
    pre_s: float = 5.0
    post_s: float = 5.0
    max_bytes: int = 1 << 30        # the clips folder's budget
    width: int = 480                # frames wider than this are downscaled (aspect kept)
    ring_bytes: int = 128 << 20     # per camera: frames held for the seconds before an alert
    codec: str = "mp4v"             # a FourCC cv2.VideoWriter can write into .mp4 ("avc1" where built in)


@dataclass
class _Frame:
    index: int
    ts: float
    image: np.ndarray


@dataclass
class _Clip:
    alert_id: str
    camera: str
    path: Path
    fps: float
    size: tuple[int, int]            # width, height of the first frame; later frames are fitted
    stop_ts: float | None = None     # set when the alert ends: its last frame + post_s
    last_index: int = -1             # the last frame handed to the writer
    frames: int = 0                  # written (writer thread)
    dropped: int = 0                 # frames the writer could not keep up with
    done: threading.Event = field(default_factory=threading.Event)


def downscale(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= width:
        return image.copy()  # the reader's buffer may be reused
    height = max(2, int(round(h * width / w)) // 2 * 2)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class FrameRing:
    """The last frames of one camera, bounded by the span of their times and by bytes."""

    def __init__(self, seconds: float, max_bytes: int):
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._frames: deque[_Frame] = deque()
        self.bytes = 0

    def push(self, frame: _Frame) -> None:
        self._frames.append(frame)
        self.bytes += frame.image.nbytes
        while len(self._frames) > 1 and (self.bytes > self.max_bytes or
                                         frame.ts - self._frames[0].ts > self.seconds):
            self.bytes -= self._frames.popleft().image.nbytes

    def since(self, ts: float) -> list[_Frame]:
        return [f for f in self._frames if f.ts >= ts]

    def find(self, index: int) -> _Frame | None:
        for f in reversed(self._frames):
            if f.index == index:
                return f
            if f.index < index:
                return None
        return None

    def fps(self) -> float:
        """Frames per second on the source's clock, from the ring's own frames."""
        if len(self._frames) < 2:
            return FALLBACK_FPS
        span = self._frames[-1].ts - self._frames[0].ts
        return (len(self._frames) - 1) / span if span > 0 else FALLBACK_FPS

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def first_ts(self) -> float | None:
        return self._frames[0].ts if self._frames else None

    @property
    def last_ts(self) -> float | None:
        return self._frames[-1].ts if self._frames else None


def clip_settings(alerts) -> ClipSettings:
    """ClipSettings from a camera's alert settings (monitor.config.AlertSettings' clip keys)."""
    return ClipSettings(Path(alerts.clips), float(alerts.clip_pre_s), float(alerts.clip_post_s),
                        int(alerts.clips_max_mb * (1 << 20)), int(alerts.clip_width),
                        int(alerts.clip_ring_mb * (1 << 20)), alerts.clip_codec)


class ClipWriter:
    """The one thread that encodes clips, and the clips folder's size budget."""

    @classmethod
    def for_config(cls, alerts) -> "ClipWriter | None":
        """The writer for the monitor's [alerts] settings; None when clips are off. A folder
        that cannot be made is a ValueError naming it."""
        if not alerts.clips:
            return None
        try:
            return cls(clip_settings(alerts))
        except OSError as exc:
            raise ValueError(f"clips folder {alerts.clips}: {exc.strerror or exc}") from exc

    def __init__(self, settings: ClipSettings):
        self.settings = settings
        settings.directory.mkdir(parents=True, exist_ok=True)
        for stale in settings.directory.glob("*" + PARTIAL):   # a clip cut short by a crash
            stale.unlink(missing_ok=True)
        self._queue: queue.Queue = queue.Queue()
        self._queued_bytes = 0
        self._lock = threading.Lock()
        # The latest clips written and removed (for logs and tests); bounded, as alerts are not.
        self.written: deque[Path] = deque(maxlen=256)
        self.removed: deque[Path] = deque(maxlen=256)
        self._thread = threading.Thread(target=self._loop, name="clips", daemon=True)
        self._thread.start()
        self.enforce_budget()

    # -- called by the cameras (reader and scoring threads) ----------------------------------
    def open(self, clip: _Clip) -> None:
        self._queue.put(("open", clip, None))

    def frame(self, clip: _Clip, frame: _Frame) -> None:
        with self._lock:
            if self._queued_bytes + frame.image.nbytes > self.settings.ring_bytes:
                clip.dropped += 1      # the disk cannot keep up: drop rather than hold the reader
                return
            self._queued_bytes += frame.image.nbytes
        self._queue.put(("frame", clip, frame))

    def finish(self, clip: _Clip) -> None:
        self._queue.put(("finish", clip, None))

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued, close every clip, stop the thread; False if it did not end."""
        self._queue.put(("stop", None, None))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the writer thread ------------------------------------------------------------------
    def _loop(self) -> None:
        writers: dict[int, cv2.VideoWriter] = {}   # by id() of the open clip
        clips: dict[int, _Clip] = {}
        while True:
            kind, clip, frame = self._queue.get()
            try:
                if kind == "stop":
                    for key in list(writers):
                        self._complete(writers.pop(key), clips.pop(key))
                    return
                key = id(clip)
                if kind == "open":
                    writer = cv2.VideoWriter(str(clip.path.with_name(clip.path.stem + PARTIAL)),
                                             cv2.VideoWriter_fourcc(*self.settings.codec), clip.fps, clip.size)
                    if not writer.isOpened():
                        log.error("%s: clip %s not written: OpenCV cannot write %s video there", clip.camera,
                                  clip.path, self.settings.codec)
                        clip.done.set()
                        continue
                    writers[key], clips[key] = writer, clip
                elif kind == "frame":
                    with self._lock:
                        self._queued_bytes -= frame.image.nbytes
                    writer = writers.get(key)
                    if writer is None or (clip.stop_ts is not None and frame.ts > clip.stop_ts):
                        continue
                    image = frame.image
                    if (image.shape[1], image.shape[0]) != clip.size:   # the camera changed resolution
                        image = cv2.resize(image, clip.size, interpolation=cv2.INTER_AREA)
                    writer.write(image)
                    clip.frames += 1
                elif kind == "finish" and key in writers:
                    self._complete(writers.pop(key), clips.pop(key))
            except Exception:   # one clip's trouble must not stop the others
                log.exception("clip writer: %s failed", kind)

    def _complete(self, writer: cv2.VideoWriter, clip: _Clip) -> None:
        writer.release()
        partial = clip.path.with_name(clip.path.stem + PARTIAL)
        try:
            os.replace(partial, clip.path)
        except OSError as exc:
            log.error("%s: clip %s not completed: %s", clip.camera, clip.path, exc)
            clip.done.set()
            return
        if clip.dropped:
            log.warning("%s: clip %s lacks %d frames (the disk did not keep up)", clip.camera, clip.path.name,
                        clip.dropped)
        log.info("%s: clip %s written (%d frames)", clip.camera, clip.path, clip.frames)
        self.written.append(clip.path)
        self.enforce_budget(keep=clip.path)
        clip.done.set()

    def enforce_budget(self, keep: Path | None = None) -> None:
        """Remove the oldest finished clips while the folder holds more than max_bytes."""
        clips = []
        for p in self.settings.directory.glob("*.mp4"):
            if p.name.endswith(PARTIAL):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            clips.append((st.st_mtime, p.name, p, st.st_size))
        clips.sort()
        total = sum(c[3] for c in clips)
        for _, _, path, size in clips:
            if total <= self.settings.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            self.removed.append(path)
            log.info("clips: removed %s (the folder is held under %d MB)", path.name, self.settings.max_bytes >> 20)


class CameraClips:
    """One camera's ring and its open clips: `push` every frame (the reader's thread),
    `on_alert` every alert event (the scoring thread) -> the clip's path."""

    def __init__(self, camera: str, settings: ClipSettings, writer: ClipWriter):
        self.camera = camera
        self.settings = settings
        self.writer = writer
        self.ring = FrameRing(settings.pre_s + DETECTION_SLACK_S, settings.ring_bytes)
        self._open: dict[str, _Clip] = {}
        self._lock = threading.Lock()

    def push(self, index: int, ts: float, image: np.ndarray) -> None:
        frame = _Frame(index, ts, downscale(image, self.settings.width))
        with self._lock:
            self.ring.push(frame)
            for clip in list(self._open.values()):
                self._forward(clip, frame)
                if clip.stop_ts is not None and ts > clip.stop_ts:
                    self._finish(clip)

    def _forward(self, clip: _Clip, frame: _Frame) -> None:
        if frame.index > clip.last_index:
            clip.last_index = frame.index
            self.writer.frame(clip, frame)

    def _finish(self, clip: _Clip) -> None:
        self._open.pop(clip.alert_id, None)
        self.writer.finish(clip)

    def on_alert(self, event: dict) -> str | None:
        """Start a clip on `start`, set its end on `end`; -> the path the clip has once complete."""
        alert_id, (first, last) = event.get("alert_id"), event.get("frames") or (None, None)
        with self._lock:
            if event.get("event") == "start":
                start = self.ring.find(first)
                if start is None and not len(self.ring):
                    return None
                # Its first frame may have left a ring held short by its byte bound: from the oldest then.
                frames = self.ring.since((start.ts if start else self.ring.first_ts) - self.settings.pre_s)
                size = (frames[0].image.shape[1], frames[0].image.shape[0])
                clip = _Clip(alert_id, self.camera, (self.settings.directory / f"{alert_id}.mp4").resolve(),
                             self.ring.fps(), size)
                self._open[alert_id] = clip
                self.writer.open(clip)
                for frame in frames:
                    self._forward(clip, frame)
                return str(clip.path)
            clip = self._open.get(alert_id)
            if clip is None:
                return None
            end = self.ring.find(last)
            newest = self.ring.last_ts if self.ring.last_ts is not None else 0.0
            clip.stop_ts = (end.ts if end else newest) + self.settings.post_s
            # Frames already past the end (a file read ahead of scoring) close it at once.
            if newest > clip.stop_ts or event.get("reason") == "shutdown":
                self._finish(clip)
            return str(clip.path)

    def finish_all(self) -> None:
        """The camera ended (or the monitor stops): close its open clips with what they have."""
        with self._lock:
            for clip in list(self._open.values()):
                self._finish(clip)
