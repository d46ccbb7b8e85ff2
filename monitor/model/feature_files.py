"""Reading one video's precomputed features in the published layout (SPEC §1).

Either one packed array [T, crops + ΣP, F] (the published test-time concatenation), or a
`<video>_i3d.npy` [T, crops, F] with `<video>_patch{S}_i3d.npy` [T, r·c, F] beside it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.model.manifest import Manifest

PUBLISHED_GRIDS = (23, 35, 47)


class FeatureFileError(ValueError):
    pass


def patch_companion(main: Path, grid: int) -> Path:
    stem = main.name[: -len("_i3d.npy")] if main.name.endswith("_i3d.npy") else main.stem
    return main.with_name(f"{stem}_patch{grid}_i3d.npy")


def align_snippets(patches: np.ndarray, t: int) -> np.ndarray:
    """Patch files can hold a snippet more or less than their main file (the released
    ShanghaiTech features do); the published loader repeats the last patch row or cuts the
    extra ones, and so do we, so that scores match the published evaluation."""
    if patches.shape[0] > t:
        return patches[:t]
    if patches.shape[0] < t:
        pad = np.repeat(patches[-1:], t - patches.shape[0], axis=0)
        return np.concatenate([patches, pad], axis=0)
    return patches


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FeatureFileError(f"{path}: no such feature file")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise FeatureFileError(f"{path}: not a readable .npy array ({exc})") from exc


def load_video_features(path: str | Path, manifest: Manifest) -> tuple[np.ndarray, np.ndarray | None]:
    """-> crops [T, C, F] float32, patches [T, ΣP, F] float32 (None for stage 1)."""
    path = Path(path)
    c, f, grids = manifest.crops, manifest.feature_size, list(manifest.grids)
    sizes = manifest.patches
    data = _load(path)
    if data.ndim != 3 or data.shape[2] != f:
        raise FeatureFileError(f"{path}: expected shape [T, {c} + patches, {f}], found {list(data.shape)}")
    rows = data.shape[1]
    if rows == c + sum(sizes):                      # packed exactly for this model
        crops, patches = data[:, :c], data[:, c:]
    elif rows == c:                                 # main file: companions beside it
        crops = data
        parts = []
        for g, p in zip(grids, sizes):
            comp = patch_companion(path, g)
            if not comp.is_file():
                raise FeatureFileError(f"{comp}: missing patch companion of {path.name}; "
                                       f"expected shape [{data.shape[0]}, {p}, {f}] for grid {g}")
            arr = _load(comp)
            if arr.ndim != 3 or arr.shape[1:] != (p, f) or arr.shape[0] < 1:
                raise FeatureFileError(f"{comp}: expected shape [{data.shape[0]}, {p}, {f}], found {list(arr.shape)}")
            parts.append(align_snippets(arr, data.shape[0]))
        patches = np.concatenate(parts, axis=1) if parts else None
    elif list(grids) == list(PUBLISHED_GRIDS[: len(grids)]) and rows == c + 49:
        # Packed with all published grids (23, 35, 47); an earlier stage uses a prefix.
        crops, patches = data[:, :c], data[:, c: c + sum(sizes)]
    else:
        expected = c + sum(sizes)
        raise FeatureFileError(f"{path}: expected shape [T, {expected}, {f}] (packed: {c} crops + "
                               f"{' + '.join(map(str, sizes)) or '0'} patches) or [T, {c}, {f}] with "
                               f"companions, found {list(data.shape)}")
    if data.shape[0] < 1:
        raise FeatureFileError(f"{path}: holds no snippets (T = 0)")
    crops = np.ascontiguousarray(crops, dtype=np.float32)
    if manifest.stage == 1:
        return crops, None
    return crops, np.ascontiguousarray(patches, dtype=np.float32)
