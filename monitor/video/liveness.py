"""Telling a new frame of a live source from one handed back again.

`cap.read()` returning True does not prove a frame is new: on a stalled stream a capture
may hand back the last decoded frame again, and scoring it would be scoring the past as
live video. A frame is taken as new when its pixels differ from the previous frame's (a
cheap CRC of a subsample of rows) or, for a still picture, when the stream's own clock
moved (CAP_PROP_POS_MSEC, else the frame position). A frame handed back again fails both.
A real sensor's noise makes two new frames byte-identical only in a picture that is
perfectly still and has no clock; such a source reads as stalled, and is reopened.

The pictures come first, so a stream without a clock of its own (MJPEG over HTTP: JPEG
frames carry no time stamps) is alive while they change, whatever its clock says. Its
"clock" is then a position FFmpeg counts from the frames read at a frame rate it assumes, so
a camera whose encoder froze and resends one picture byte for byte still reads as alive
(tests/test_source_limits.py shows the clock-less stream streaming and, paused, stalled).
"""
from __future__ import annotations

import zlib

import numpy as np

ROW_STEP = 8   # rows sampled for the fingerprint: 1/8 of the bytes is enough to see change


def fingerprint(image: np.ndarray) -> int:
    rows = np.ascontiguousarray(image[::ROW_STEP])
    return zlib.crc32(rows.data, zlib.crc32(repr(image.shape).encode()))


class Liveness:
    """One per open capture: `fresh(position_ms, position_frames, image)` for each frame read."""

    def __init__(self):
        self._clock: float | None = None   # last position seen (ms, or frames when ms is absent)
        self._print: int | None = None
        self.repeats = 0                   # frames read that were not new

    def fresh(self, position_ms: float | None, position_frames: float | None, image: np.ndarray) -> bool:
        clock = position_ms if position_ms and position_ms > 0 else \
            (position_frames if position_frames and position_frames > 0 else None)
        mark = fingerprint(image)
        previous_clock, previous_print = self._clock, self._print
        self._clock, self._print = clock, mark
        if previous_print is None or mark != previous_print:
            return True                    # the first frame, or the picture changed
        if clock is not None and previous_clock is not None and clock != previous_clock:
            return True                    # a still picture, but the stream's clock moved
        self.repeats += 1
        return False
