"""A seeded synthetic feature set in the published layout, for the training tests.

Normal snippets are non-negative noise around a per-video level; an abnormal video carries a
short run of anomalous snippets whose features are shifted along a fixed direction (larger
magnitude, as the SSRL loss assumes). Files: `<video>_i3d.npy` [T, crops, F] and, per grid,
`<video>_patch{S}_i3d.npy` [T, r·c, F]; lists `train.list` (abnormal first) and `test.list`,
and the frame ground truth `gt.npy` (16 frames per snippet).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.ssrl import grid_patches


@dataclass
class SyntheticSet:
    root: Path
    train_list: Path
    test_list: Path
    gt: Path
    abnormal_train: int
    crops: int
    feature_size: int
    grids: tuple[int, ...]
    names: list[str] = field(default_factory=list)


def _video(rng, t, crops, f, grids, direction, anomalous: slice | None):
    level = rng.uniform(0.3, 0.6)
    base = np.abs(rng.normal(level, 0.25, size=(t, f)))
    if anomalous is not None:
        base[anomalous] += direction * rng.uniform(1.5, 2.5)
    main = np.abs(base[:, None, :] + rng.normal(0, 0.05, size=(t, crops, f)))
    patches = {g: np.abs(base[:, None, :] + rng.normal(0, 0.1, size=(t, grid_patches(g), f))) for g in grids}
    return main.astype(np.float32), {g: p.astype(np.float32) for g, p in patches.items()}


def make_feature_set(root: Path, *, feature_size: int = 32, crops: int = 2, grids: tuple[int, ...] = (),
                     normal: int = 12, abnormal: int = 12, test_normal: int = 4, test_abnormal: int = 4,
                     length: tuple[int, int] = (24, 48), seed: int = 0) -> SyntheticSet:
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    direction = np.zeros(feature_size)
    direction[rng.choice(feature_size, feature_size // 4, replace=False)] = 1.0

    def write(name, abnormal_video):
        t = int(rng.integers(*length))
        anomalous = None
        if abnormal_video:
            run = int(rng.integers(3, 7))
            begin = int(rng.integers(0, t - run))
            anomalous = slice(begin, begin + run)
        main, patches = _video(rng, t, crops, feature_size, grids, direction, anomalous)
        np.save(root / f"{name}_i3d.npy", main)
        for g, p in patches.items():
            np.save(root / f"{name}_patch{g}_i3d.npy", p)
        labels = np.zeros(t * 16, dtype=np.float64)
        if anomalous is not None:
            labels[anomalous.start * 16: anomalous.stop * 16] = 1
        return f"{name}_i3d.npy", labels

    train_lines = []
    for i in range(abnormal):
        line, _ = write(f"train_abn{i:03d}", True)
        train_lines.append(line)
    for i in range(normal):
        line, _ = write(f"train_nor{i:03d}", False)
        train_lines.append(line)
    test_lines, gts = [], []
    for i in range(test_abnormal + test_normal):
        line, labels = write(f"test{i:03d}", i < test_abnormal)
        test_lines.append(line)
        gts.append(labels)
    names = train_lines + test_lines
    (root / "train.list").write_text("\n".join(train_lines) + "\n")
    (root / "test.list").write_text("\n".join(test_lines) + "\n")
    np.save(root / "gt.npy", np.concatenate(gts))
    return SyntheticSet(root, root / "train.list", root / "test.list", root / "gt.npy", abnormal, crops,
                        feature_size, tuple(grids), names)
