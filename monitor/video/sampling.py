"""Snippets sampled from a video file for measuring and calibrating (not for scoring, which
reads every frame): a few snippets spread over the whole video, since neighbouring ones show
nearly the same thing."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def video_snippets(path: Path, count: int, length: int = 16, spread: bool = True) -> list[np.ndarray]:
    """Up to `count` snippets of `length` consecutive frames, spread evenly over the video
    (neighbouring snippets show nearly the same thing); skipped frames are not decoded."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        return []
    try:
        whole = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) // length if spread else 0
        step = max(whole // count, 1) if whole else 1
        out: list[np.ndarray] = []
        index = 0
        while len(out) < count:
            take = index % step == 0
            frames = []
            for _ in range(length):
                if take:
                    ok, frame = capture.read()
                    frames.append(frame)
                else:
                    ok = capture.grab()
                if not ok:
                    # A container that promises more frames than it holds: take them in a row.
                    return out if step == 1 or len(out) == count else video_snippets(path, count, length, False)
            if take:
                try:
                    out.append(np.stack(frames))
                except ValueError:  # the frame size changed mid-video: keep what came before
                    return out
            index += 1
        return out
    finally:
        capture.release()
