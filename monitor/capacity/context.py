"""What the measurements of one bench run share: the bundle, its settings, the test videos
and snippets (the same inputs for every measurement), and the results so far."""
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

FPS = 25.0
VIDEO_SIZE = (320, 240)
VIDEOS = 4           # distinct recordings; cameras beyond that reuse them (each has its own reader)
VIDEO_SECONDS = 24.0


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
    _bundle: Bundle | None = None
    _videos: list[Path] = field(default_factory=list)
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
        """320 x 240, 25 fps recordings of the synthetic camera (people walking, anomalies now
        and then), written once per run with OpenCV."""
        if not self._videos:
            from monitor.video.synthetic import SyntheticCamera
            self.work.mkdir(parents=True, exist_ok=True)
            for i in range(VIDEOS):
                path = self.work / f"camera{i}.mp4"
                if not path.is_file():
                    url = f"synthetic://bench{i}?seed={100 + i}&fps={FPS:g}&width={VIDEO_SIZE[0]}&height={VIDEO_SIZE[1]}"
                    camera = SyntheticCamera.from_url(url, realtime=False)
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, VIDEO_SIZE)
                    if not writer.isOpened():
                        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video here")
                    for _ in range(int(VIDEO_SECONDS * FPS)):
                        writer.write(camera.read()[1])
                    writer.release()
                self._videos.append(path)
        return self._videos

    def snippets(self, count: int) -> list[np.ndarray]:
        """`count` snippets of 16 decoded frames, one from each video in turn."""
        length = self.geometry.snippet_length
        while len(self._snippets) < count:
            k = len(self._snippets)
            video = self.videos()[k % VIDEOS]
            capture = cv2.VideoCapture(str(video))
            capture.set(cv2.CAP_PROP_POS_FRAMES, (k // VIDEOS) * length % int(VIDEO_SECONDS * FPS - length))
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
