"""Offline scoring of a whole video, as the published evaluation does (SPEC §5): the spatial
graph per snippet, then the temporal graph over all T snippets at once."""
from __future__ import annotations

import numpy as np

from monitor.model.bundle import Bundle

SPATIAL_CHUNK = 64  # snippets per spatial call: bounds memory; snippets never mix there


def fuse_all(bundle: Bundle, crops: np.ndarray, patches: np.ndarray | None) -> np.ndarray:
    """[T, C, F] (+ [T, ΣP, F]) -> [T, C, F] fused snippet features."""
    if patches is None:
        return crops
    return np.concatenate([bundle.fuse(crops[i:i + SPATIAL_CHUNK], patches[i:i + SPATIAL_CHUNK])
                           for i in range(0, len(crops), SPATIAL_CHUNK)], axis=0)


def score_video(bundle: Bundle, crops: np.ndarray, patches: np.ndarray | None) -> np.ndarray:
    """-> [T] float32 snippet scores, the whole video in one temporal window."""
    fused = fuse_all(bundle, crops, patches)
    return bundle.scores(fused[None])[0].astype(np.float32)
