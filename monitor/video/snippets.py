"""Frames -> 16-frame snippets, per camera, and snippets -> backbone clips through the one
preprocessing path (monitor.video.preprocess), so that live clips are the clips training saw."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from monitor.video.sources import Frame


@dataclass
class RawSnippet:
    camera: str
    index: int              # snippet index since the camera started
    frames: np.ndarray      # [length, h, w, 3] BGR uint8, as pushed (the engine: resized on arrival)
    first_frame: int        # source frame indices covered (stride included)
    last_frame: int
    first_ts: float         # times of the first and last frame on the source's clock (Frame.ts)
    last_ts: float
    received: float = 0.0   # wall-clock time the last frame was read (latency)
    first_position: float | None = None   # files: seconds into the file of the first and last frame
    last_position: float | None = None
    prepared: tuple | None = None   # the backbone input made from `frames` (the engine prepares it)
    # The frame an alert snapshot shows: the middle one, as the camera sent it (a copy), when kept.
    keyframe: np.ndarray | None = None


class SnippetAssembler:
    """Collects every `stride`-th frame of one camera into snippets of `length` frames
    (non-overlapping, as the published features cut videos). Holds at most one snippet."""

    def __init__(self, camera: str, length: int = 16, stride: int = 1, keep_keyframe: bool = True):
        if length < 1 or stride < 1:
            raise ValueError(f"snippet length and stride must be >= 1, got {length}, {stride}")
        self.camera = camera
        self.length = length
        self.stride = stride
        self.keep_keyframe = keep_keyframe
        self.snippets = 0
        self._buffer: np.ndarray | None = None
        self._source_shape: tuple | None = None   # of the frames as they come (a change restarts)
        self._keyframe: np.ndarray | None = None
        self._count = 0
        self._seen = 0
        self._first: Frame | None = None

    def reset(self) -> None:
        """The frame sequence broke (reconnect, resolution change): drop the partial snippet."""
        self._count = 0
        self._seen = 0
        self._first = None
        self._keyframe = None

    def push(self, frame: Frame, resize: Callable[[np.ndarray], np.ndarray] | None = None) -> RawSnippet | None:
        """Add a frame, stored as resize(frame.image) when given (only for the frames the
        stride takes); returns a snippet when this frame completes one. Holding resized frames,
        a camera's partial snippet costs the backbone's frame size, not 16 full frames (at 1080p
        100 MB), and the resizing is spread over the frames instead of coming at once."""
        if self._count and self._source_shape != frame.image.shape:
            self.reset()
        self._source_shape = frame.image.shape
        take = self._seen % self.stride == 0
        self._seen += 1
        if not take:
            return None
        image = frame.image if resize is None else resize(frame.image)
        if self._buffer is None or self._buffer.shape[1:] != image.shape:
            self._buffer = np.empty((self.length,) + image.shape, np.uint8)
        if self._count == 0:
            self._first = frame
        if self._count == self.length // 2 and self.keep_keyframe:
            self._keyframe = frame.image.copy()  # the decoder's array may be reused
        self._buffer[self._count] = image
        self._count += 1
        if self._count < self.length:
            return None
        snippet = RawSnippet(self.camera, self.snippets, self._buffer, self._first.index, frame.index,
                             self._first.ts, frame.ts, frame.received, self._first.position, frame.position,
                             keyframe=self._keyframe)
        self._buffer = None  # the snippet owns that array now
        self._keyframe = None
        self._count = 0
        self._seen = 0
        self.snippets += 1
        return snippet
