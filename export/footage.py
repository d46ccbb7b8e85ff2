"""Footage that converted graphs are calibrated and measured on: 16-frame snippets of real
videos (or of the synthetic camera), turned into backbone inputs by the one preprocessing
path (monitor.video.preprocess.Preprocessor), exactly as the live engine and
training.extract turn them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.video.preprocess import Geometry, Preprocessor
from monitor.video.sampling import video_snippets
from training.extract import find_videos

# Pixels per backbone call while calibrating and measuring (two 16 x 224 x 224 clips): ONNX
# Runtime's calibrator keeps every intermediate tensor of a call, over a GB per full-size clip.
BATCH_VOXELS = 2 * 16 * 224 * 224


class FootageError(ValueError):
    """Videos that cannot give snippets; the message names the path."""


@dataclass
class Footage:
    """Snippets (BGR uint8 [16, H, W, 3] each) and where each came from (a video's name, or
    the synthetic camera's URL)."""
    snippets: list[np.ndarray]
    origins: list[str]

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(self.origins))

    def subset(self, keep) -> "Footage":
        """The snippets whose index `keep(i)` accepts."""
        chosen = [i for i in range(len(self.snippets)) if keep(i)]
        return Footage([self.snippets[i] for i in chosen], [self.origins[i] for i in chosen])

    def describe(self) -> dict:
        counts = {name: self.origins.count(name) for name in self.sources}
        return {"videos": self.sources, "snippets": len(self.snippets), "snippets_per_video": counts}


def from_videos(path: Path, snippets: int, length: int = 16) -> Footage:
    """`snippets` in all from the videos at `path` (a file or a directory), shared evenly."""
    try:
        videos = find_videos(Path(path))
    except FileNotFoundError as exc:
        raise FootageError(str(exc)) from exc
    if not videos:
        raise FootageError(f"{path}: no video files (.mp4, .avi, .mkv, ...) there")
    each = max(1, -(-snippets // len(videos)))
    found, origins = [], []
    for video in videos:
        got = video_snippets(video, each, length)
        found += got
        origins += [video.name] * len(got)
    if not found:
        raise FootageError(f"{path}: none of its {len(videos)} videos gives a whole snippet of {length} frames")
    return Footage(found, origins)


def from_synthetic(snippets: int, seed: int = 7, length: int = 16) -> Footage:
    """The synthetic camera (people walking, anomalies injected), for measuring a conversion
    when no videos are given."""
    from monitor.video.synthetic import SyntheticCamera
    url = f"synthetic://measure?seed={seed}&rate=4&first=1&realtime=0"
    frames: list[np.ndarray] = []
    out: list[np.ndarray] = []
    for frame in SyntheticCamera.from_url(url):
        frames.append(frame)
        if len(frames) == length:
            out.append(np.stack(frames))
            frames = []
            if len(out) == snippets:
                break
    return Footage(out, [url] * len(out))


def backbone_batches(footage: Footage, geometry: Geometry, voxels: int = BATCH_VOXELS,
                     pixels: bool = False) -> list[np.ndarray]:
    """The backbone's input batches for every snippet: its crop clips, then its patch clips,
    each batch clips of one size and at most `voxels` pixels of them (at least one clip);
    uint8 pixels [N, T, H, W, 3] for a pixel-input backbone (`pixels`), else float clips."""
    pre = Preprocessor(geometry)
    batches = []
    for frames in footage.snippets:
        crops, patches = pre.pixels(frames) if pixels else pre.snippet(frames)
        for clips in (crops, patches):
            if clips is not None:
                chunk = max(1, voxels // int(np.prod(clips.shape[1:4] if pixels else clips.shape[2:])))
                batches += [clips[i:i + chunk] for i in range(0, len(clips), chunk)]
    return batches
