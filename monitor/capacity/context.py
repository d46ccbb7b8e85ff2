"""What the measurements of one bench run share: the bundle, its settings, the videos the
cameras play (the synthetic test recordings, or a site's own with --video) and their snippets
(the same inputs for every measurement), and the results so far."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from monitor.config import Config
from monitor.engine import batch_limit, prepare_clips
from monitor.model.bundle import Bundle
from monitor.video.preprocess import Geometry, Preprocessor
from monitor.video.sources import VIDEO_SUFFIXES, videos_in

FPS = 25.0
VIDEO_SIZE = (320, 240)
VIDEOS = 4           # distinct recordings; cameras beyond that reuse them (each has its own reader)
VIDEO_SECONDS = 24.0


class VideoError(ValueError):
    """A --video or --video-size the bench cannot use; the message names the flag."""


def video_size_flag(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080), for --video-size."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or not (16 <= int(w) <= 8192 and 16 <= int(h) <= 8192):
        raise VideoError(f"--video-size {text}: give WIDTHxHEIGHT in pixels, 16 to 8192 each, e.g. 1920x1080")
    return int(w), int(h)


@dataclass(frozen=True)
class Recording:
    """A video the cameras play, as OpenCV reads it."""
    path: Path
    size: tuple[int, int]
    fps: float
    frames: int
    codec: str


def probe(path: Path, flag: str = "--video", snippet_length: int = 16) -> Recording:
    """What a recording holds, read through OpenCV as a camera reads it; a VideoError naming
    `flag` and the file when it cannot serve as a camera (missing, undecodable, too short)."""
    if not path.is_file():
        raise VideoError(f"{flag} {path}: no such file")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        ok, image = capture.read() if capture.isOpened() else (False, None)
        if not ok or image is None:
            raise VideoError(f"{flag} {path}: OpenCV cannot decode a frame of it")
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC) or 0)
        codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") or "?"
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        counted = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames = 1
        while frames < 2 * snippet_length and capture.grab():  # the two a camera needs, decoded
            frames += 1
    finally:
        capture.release()
    if frames < 2 * snippet_length:
        raise VideoError(f"{flag} {path}: {frames} frames, fewer than two {snippet_length}-frame snippets")
    # Beyond those, the container's count says where snippets may be taken from (a long site
    # recording is not decoded whole here; a count too high falls back to the start, snippets()).
    frames = max(frames, counted)
    return Recording(path, (image.shape[1], image.shape[0]), fps if 0 < fps < 1000 else FPS, frames, codec)


def expand_recordings(paths: list[Path]) -> list[Path]:
    """--video paths, a folder standing for the recordings in it (name order)."""
    out = []
    for path in paths:
        if path.is_dir():
            found = videos_in(path)
            if not found:
                raise VideoError(f"--video {path}: no video files in this folder ({', '.join(sorted(VIDEO_SUFFIXES))})")
            out += found
        else:
            out.append(path)
    return out


@dataclass
class Bench:
    bundle_path: Path
    work: Path                      # test videos are written here
    cameras: int = 4
    seconds: float = 20.0           # length of each timed engine run
    providers: list[str] | None = None
    threads: int | None = None
    log: Callable[[str], None] = lambda line: None
    results: dict = field(default_factory=dict)
    recordings: list[Path] = field(default_factory=list)  # --video: a site's own; none: synthetic ones
    video_size: tuple[int, int] = VIDEO_SIZE                # of the synthetic recordings
    _bundle: Bundle | None = None
    _videos: list[Recording] = field(default_factory=list)
    _snippets: list[np.ndarray] = field(default_factory=list)
    _prepared: list[tuple] = field(default_factory=list)

    @property
    def bundle(self) -> Bundle:
        """The bundle as the live engine loads it: its runs at once and threads per run
        (providers.scoring_layout), so that every figure is of the graphs as the engine runs them."""
        if self._bundle is None:
            self._bundle = Bundle(self.bundle_path, providers=self.providers, threads=self.threads, workers=None)
        return self._bundle

    @property
    def geometry(self) -> Geometry:
        return Geometry.from_manifest(self.bundle.manifest)

    @property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.geometry)

    def videos(self) -> list[Path]:
        """The recordings the cameras play, camera i the i-th in turn: the ones given (--video),
        or 25 fps recordings of the synthetic camera (people walking, anomalies now and then) at
        `video_size`, written once per run with OpenCV."""
        return [r.path for r in self.recordings_held()]

    def recordings_held(self) -> list[Recording]:
        if not self._videos:
            paths = expand_recordings(self.recordings) if self.recordings else self._synthetic()
            self._videos = [probe(path, "--video" if self.recordings else "test video", self.geometry.snippet_length)
                            for path in paths]
        return self._videos

    def _synthetic(self) -> list[Path]:
        from monitor.video.synthetic import SyntheticCamera
        self.work.mkdir(parents=True, exist_ok=True)
        (w, h), paths = self.video_size, []
        for i in range(VIDEOS):
            path = self.work / f"camera{i}-{w}x{h}.mp4"
            if not path.is_file():
                url = f"synthetic://bench{i}?seed={100 + i}&fps={FPS:g}&width={w}&height={h}"
                camera = SyntheticCamera.from_url(url, realtime=False)
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"{path}: OpenCV cannot write mp4v video here")
                for _ in range(int(VIDEO_SECONDS * FPS)):
                    writer.write(camera.read()[1])
                writer.release()
            paths.append(path)
        return paths

    def describe_videos(self) -> dict:
        """What the cameras play, for the results."""
        held = self.recordings_held()
        sizes = sorted({r.size for r in held})
        return {"video": "synthetic" if not self.recordings else " ".join(str(r.path) for r in held),
                "video_size": list(sizes[0]) if len(sizes) == 1 else [list(size) for size in sizes],
                "video_codec": " ".join(sorted({r.codec for r in held})),
                "video_fps": sorted({round(r.fps, 2) for r in held})[-1]}

    def snippets(self, count: int) -> list[np.ndarray]:
        """`count` snippets of 16 decoded frames, one from each video in turn."""
        length = self.geometry.snippet_length
        held = self.recordings_held()
        while len(self._snippets) < count:
            k = len(self._snippets)
            video = held[k % len(held)]
            capture = cv2.VideoCapture(str(video.path), cv2.CAP_FFMPEG)
            capture.set(cv2.CAP_PROP_POS_FRAMES, (k // len(held)) * length % (video.frames - length))
            frames = [capture.read()[1] for _ in range(length)]
            capture.release()
            if any(frame is None for frame in frames):  # a seek that fell short: the start, then
                capture = cv2.VideoCapture(str(video.path), cv2.CAP_FFMPEG)
                frames = [capture.read()[1] for _ in range(length)]
                capture.release()
            self._snippets.append(np.stack(frames))
        return self._snippets[:count]

    def prepared(self, count: int) -> list[tuple]:
        """The backbone inputs of those snippets, prepared as the engine prepares them."""
        snippets = self.snippets(count)
        pre = self.preprocessor
        while len(self._prepared) < count:
            self._prepared.append(prepare_clips(pre, self.bundle, snippets[len(self._prepared)]))
        return self._prepared[:count]

    def batch(self) -> int:
        """Snippets per backbone call for this many cameras: one each, within the engine's bound."""
        return batch_limit(self.bundle.manifest, min(self.cameras, Config().engine.max_batch), self.bundle.workers)


def side_by_side(fn, runs: int):
    """fn() `runs` times at once, each on its own thread, as the engine's workers run the
    graphs; returns when all are done."""
    if runs <= 1:
        return fn
    def all_at_once():
        threads = [threading.Thread(target=fn, daemon=True) for _ in range(runs - 1)]
        for thread in threads:
            thread.start()
        fn()
        for thread in threads:
            thread.join()
    return all_at_once


def best_seconds(fn, budget_s: float, at_least: int = 2, warm_up: bool = True) -> float:
    """The fastest of repeated calls of fn() within about `budget_s` (at least `at_least` timed
    calls): on a shared machine the best run is the one least disturbed by others."""
    if warm_up:
        fn()
    best, runs, started = float("inf"), 0, time.perf_counter()
    while runs < at_least or time.perf_counter() - started < budget_s:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        runs += 1
    return best


def load_average() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")
