"""Frames -> 16-frame snippets, per camera, and snippets -> backbone clips through the one
preprocessing path (monitor.video.preprocess), so that live clips are the clips training saw."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.video.sources import Frame


@dataclass
class RawSnippet:
    camera: str
    index: int              # snippet index since the camera started
    frames: np.ndarray | None  # [length, H, W, 3] BGR uint8; None once dropped (drop_frames)
    first_frame: int        # source frame indices covered (stride included)
    last_frame: int
    first_ts: float         # times of the first and last frame on the source's clock (Frame.ts)
    last_ts: float
    received: float = 0.0   # wall-clock time the last frame was read (latency)
    first_position: float | None = None   # files: seconds into the file of the first and last frame
    last_position: float | None = None
    prepared: tuple | None = None   # the backbone input made from `frames` (the engine prepares it)
    _keyframe: np.ndarray | None = None

    @property
    def keyframe(self) -> np.ndarray | None:
        """The frame an alert snapshot shows: the middle of the snippet (None once the frames
        are dropped without keeping it)."""
        if self.frames is None:
            return self._keyframe
        return self.frames[len(self.frames) // 2]

    def drop_frames(self, keep_keyframe: bool = True) -> None:
        """Let the frames go once the backbone input is made (`prepared`), keeping a copy of the
        keyframe for a snapshot: a snippet waiting to be scored then holds its small input, not
        16 full frames (at 1080p 100 MB, against 6 MB for the keyframe)."""
        if self.frames is None:
            return
        self._keyframe = self.frames[len(self.frames) // 2].copy() if keep_keyframe else None
        self.frames = None


class SnippetAssembler:
    """Collects every `stride`-th frame of one camera into snippets of `length` frames
    (non-overlapping, as the published features cut videos). Holds at most one snippet."""

    def __init__(self, camera: str, length: int = 16, stride: int = 1):
        if length < 1 or stride < 1:
            raise ValueError(f"snippet length and stride must be >= 1, got {length}, {stride}")
        self.camera = camera
        self.length = length
        self.stride = stride
        self.snippets = 0
        self._buffer: np.ndarray | None = None
        self._count = 0
        self._seen = 0
        self._first: Frame | None = None

    def reset(self) -> None:
        """The frame sequence broke (reconnect, resolution change): drop the partial snippet."""
        self._count = 0
        self._seen = 0
        self._first = None

    def push(self, frame: Frame) -> RawSnippet | None:
        """Add a frame; returns a snippet when this frame completes one."""
        if self._buffer is not None and self._count and self._buffer.shape[1:] != frame.image.shape:
            self.reset()
        take = self._seen % self.stride == 0
        self._seen += 1
        if not take:
            return None
        if self._buffer is None or self._buffer.shape[1:] != frame.image.shape:
            self._buffer = np.empty((self.length,) + frame.image.shape, np.uint8)
        if self._count == 0:
            self._first = frame
        self._buffer[self._count] = frame.image
        self._count += 1
        if self._count < self.length:
            return None
        snippet = RawSnippet(self.camera, self.snippets, self._buffer, self._first.index, frame.index,
                             self._first.ts, frame.ts, frame.received, self._first.position, frame.position)
        self._buffer = None  # the snippet owns that array now
        self._count = 0
        self._seen = 0
        self.snippets += 1
        return snippet
