"""The demo bundle's backbone: a small 3-D CNN trained by the recipe, self-supervised, on
anomaly-free synthetic video. clips [N, 3, 16, H, W] (RGB in [-1, 1], the one preprocessing
path's output) -> features [N, F].

Why this design (the issue left the choice open: a seeded fixed network or a trained one):
- Speed. It runs live on 2 CPU cores beside rendering and the SSRL head, and extracts the
  demo's training set in minutes: a snippet is 1 crop (96 x 96) + 49 patch clips (24 x 24),
  about 0.6 G multiply-adds in all (I3D-ResNet50 costs ~30 G per 224 x 224 clip).
- It sees change only. Its input layer takes frame differences, so a static scene -- the
  textured background, different in every scene -- gives one and the same feature whatever
  it shows, and slow lighting drift next to nothing. Features describe what moves and how.
- It learns no anomaly. It is trained on a proxy task, as I3D was (Kinetics actions, nothing
  of ShanghaiTech's anomalies): given a patch clip of normal video, tell at which playback
  speed it was sampled (every 1st, 2nd, 3rd or 4th frame). To answer, it must learn how fast
  and in what manner things normally move in this world -- people walking, swaying trees --
  relative to their size and place. Only anomaly-free videos are used (a video-level label,
  the weak supervision the method allows); what anomalies are, the SSRL head alone learns.
- Measured on one probe set of the synthetic camera (36 videos, 1332 snippets; videos split
  in halves for fitting and testing): a linear probe on the crop feature separated anomalous
  from normal snippets with AUC 0.74 for a seeded fixed random 3-D CNN on frame differences,
  0.79 for hand-designed motion statistics (frame differences at 4 lags, flicker, colour of
  change) and 0.86 for this network; a patch-level detector (gradient boosting on the 4 x 7
  grid's patch features, max over patches) reached 0.77 / 0.87 / 0.92. It trains from scratch
  in about three minutes on 2 cores.
- Global average pooling at the end, as I3D: a crop feature dilutes a small anomaly and a
  patch feature does not -- the situation the SSRL patch branch (stages 2-4) exists for.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from monitor.video.preprocess import Geometry, resize_planes, scale

DEFAULT_FEATURES = 64
SPEEDS = (1, 2, 3, 4)          # playback speeds the proxy task tells apart
STILL_DIFFERENCE = 0.004       # mean |frame difference| below which a clip shows nothing moving


class DemoBackbone(nn.Module):
    """clips [N, 3, T, H, W] -> features [N, feature_size]; any T >= 2 and H, W >= 8."""

    def __init__(self, feature_size: int = DEFAULT_FEATURES, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.feature_size = feature_size
        c1, c2, c3 = widths
        # (conv, its BatchNorm); time is halved by the later layers, space by the first three.
        self.convs = nn.ModuleList([
            nn.Conv3d(3, c1, 3, stride=(1, 2, 2), padding=1),
            nn.Conv3d(c1, c2, 3, stride=(2, 2, 2), padding=1),
            nn.Conv3d(c2, c3, 3, stride=(2, 2, 2), padding=1),
            nn.Conv3d(c3, feature_size, 3, stride=(2, 1, 1), padding=1),
        ])
        self.norms = nn.ModuleList(nn.BatchNorm3d(c) for c in (c1, c2, c3, feature_size))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips[:, :, 1:] - clips[:, :, :-1]          # motion only: a still scene is all zeros here
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x)))
        return x.mean(dim=(2, 3, 4))


# -------------------------------------------------------------------------------------------
# Self-supervised training: which playback speed?

class SpeedClips:
    """Random patch clips of anomaly-free videos at a random playback speed, cut and resized
    by the one preprocessing path's own functions (monitor.video.preprocess)."""

    def __init__(self, videos: list[np.ndarray], geometry: Geometry, rng: np.random.Generator):
        # videos: RGB uint8 planes [3, frames, height, width] at the geometry's frame size
        self.videos = [v for v in videos if v.shape[1] >= geometry.snippet_length * max(SPEEDS)]
        if not self.videos:
            raise ValueError(f"backbone training needs videos of at least {geometry.snippet_length * max(SPEEDS)} frames")
        self.geometry, self.rng = geometry, rng
        self.boxes = [box for grid in geometry.grids for box in geometry.patch_boxes(grid)]

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        g, rng = self.geometry, self.rng
        n, p = g.snippet_length, g.patch_size
        clips = np.empty((batch, 3, n, p, p), np.float32)
        speeds = np.empty(batch, np.int64)
        k = 0
        while k < batch:
            video = self.videos[int(rng.integers(len(self.videos)))]
            label = int(rng.integers(len(SPEEDS)))
            step = SPEEDS[label]
            start = int(rng.integers(0, video.shape[1] - n * step + 1))
            top, bottom, left, right = self.boxes[int(rng.integers(len(self.boxes)))]
            planes = video[:, start:start + n * step:step, top:bottom, left:right]
            scale(resize_planes(planes, (p, p), g.resize), out=clips[k])
            # Mostly skip clips where nothing moves: their speed cannot be told.
            if np.abs(np.diff(clips[k], axis=1)).mean() < STILL_DIFFERENCE and rng.random() < 0.8:
                continue
            if rng.random() < 0.5:
                clips[k] = clips[k, ..., ::-1]      # people walk both ways
            speeds[k] = label
            k += 1
        return torch.from_numpy(clips), torch.from_numpy(speeds)


def train_backbone(videos: list[np.ndarray], geometry: Geometry, steps: int = 1500, batch: int = 64,
                   seed: int = 0, feature_size: int = DEFAULT_FEATURES, lr: float = 2e-3, log=None) -> DemoBackbone:
    """Train a DemoBackbone to tell playback speeds of anomaly-free video apart; returns it
    in eval mode, frozen."""
    torch.manual_seed(seed)
    net = DemoBackbone(feature_size)
    head = nn.Linear(feature_size, len(SPEEDS))
    params = list(net.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    data = SpeedClips(videos, geometry, np.random.default_rng([seed, 77]))
    net.train()
    started, correct, seen, losses = time.perf_counter(), 0, 0, []
    for step in range(1, steps + 1):
        x, y = data.sample(batch)
        logits = head(net(x))
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if log and (step % max(1, steps // 5) == 0 or step == steps):
            log(f"  backbone step {step}/{steps}: loss {np.mean(losses):.3f}, speed told right "
                f"{correct / seen:.0%} ({time.perf_counter() - started:.0f} s)")
            correct, seen, losses = 0, 0, []
    net.eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net
