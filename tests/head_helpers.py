"""Seeded SSRL heads and features for the tests of the head, export and offline scoring."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from training.ssrl import SSRL, SSRLConfig

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_shapes(key: str) -> dict[str, list[int]]:
    return json.loads((REFERENCE / "official_state_dict_keys.json").read_text())[key]


def reference_state_dict(stage: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint with exactly the published names and shapes, filled with seeded values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in reference_shapes(f"stage{stage}").items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.02
    return state


def seeded_model(stage: int, feature_size: int = 64, crops: int = 10, seed: int = 0) -> SSRL:
    """An SSRL head in eval mode whose BatchNorm layers carry non-trivial statistics, so
    that an export that dropped or mis-ordered them would show."""
    torch.manual_seed(seed)
    model = SSRL(SSRLConfig(stage=stage, crops=crops, feature_size=feature_size))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    return model.eval()


def seeded_features(model: SSRL, t: int, seed: int = 1) -> np.ndarray:
    """Packed features of one video [T, crops + ΣP, F], non-negative like pooled I3D features."""
    rng = np.random.default_rng(seed)
    c = model.config
    rows = c.crops + sum(c.patches)
    return np.abs(rng.standard_normal((t, rows, c.feature_size))).astype(np.float32)


def torch_scores(model: SSRL, packed: np.ndarray) -> np.ndarray:
    """The published evaluation: the whole video as one batch [1, rows, T, F], crop mean."""
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(packed.transpose(1, 0, 2)))[None]
        return model(x)[0].numpy()
