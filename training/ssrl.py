"""The SSRL scoring network (SPEC §3), stages 1-4, parameterised by grids, crops and feature size.

Input layout is the published one: [B, crops + ΣP, T, F], crops first, then the patches of
each grid in order. Attribute names (`Aggregate_clip`, `Aggregate_patch.i`, `patch_to_clip.i`,
`linear_out.i`, `classfier.fc1` ...) are those of the published checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.relation import RelationBlock

PUBLISHED_GRIDS = (23, 35, 47)
PUBLISHED_CROPS = 10
PUBLISHED_FEATURES = 2048
DROPOUT = 0.7


def grid_shape(grid: int) -> tuple[int, int]:
    """A grid is named rows then columns: 23 is 2 rows by 3 columns."""
    rows, cols = divmod(int(grid), 10)
    if not (1 <= rows <= 9 and 1 <= cols <= 9):
        raise ValueError(f"grid {grid!r} is not two digits rows·columns (e.g. 23, 35, 47)")
    return rows, cols


def grid_patches(grid: int) -> int:
    rows, cols = grid_shape(grid)
    return rows * cols


def patch_conv_padding(grid: int) -> int:
    """Padding of `patch_to_clip`'s 3×3 convolution: 1 where the grid is too small for a
    valid 3×3 (the published 23), 0 otherwise (35, 47)."""
    rows, cols = grid_shape(grid)
    return 1 if min(rows, cols) < 3 else 0


def patch_map_size(grid: int) -> tuple[int, int]:
    rows, cols = grid_shape(grid)
    pad = patch_conv_padding(grid)
    return rows + 2 * pad - 2, cols + 2 * pad - 2


@dataclass(frozen=True)
class SSRLConfig:
    stage: int = 4
    grids: tuple[int, ...] = PUBLISHED_GRIDS
    crops: int = PUBLISHED_CROPS
    feature_size: int = PUBLISHED_FEATURES

    @property
    def active_grids(self) -> tuple[int, ...]:
        return tuple(self.grids[: self.stage - 1])

    @property
    def patches(self) -> tuple[int, ...]:
        return tuple(grid_patches(g) for g in self.active_grids)

    def validate(self) -> "SSRLConfig":
        if self.stage not in (1, 2, 3, 4):
            raise ValueError(f"stage must be 1-4, got {self.stage}")
        if len(self.grids) < self.stage - 1:
            raise ValueError(f"stage {self.stage} needs {self.stage - 1} grids, got {list(self.grids)}")
        for g in self.grids:
            grid_shape(g)
            if min(patch_map_size(g)) < 1:
                raise ValueError(f"grid {g} is too small for patch_to_clip")
        if self.crops < 1:
            raise ValueError(f"crops must be >= 1, got {self.crops}")
        if self.feature_size % 8:
            raise ValueError(f"feature size must be a multiple of 8, got {self.feature_size}")
        return self


class Classifier(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.fc1 = nn.Linear(features, 512)
        self.fc2 = nn.Linear(512, 128)
        self.fc3 = nn.Linear(128, 1)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return torch.sigmoid(self.fc3(x))


class SSRL(nn.Module):
    def __init__(self, config: SSRLConfig = SSRLConfig()):
        super().__init__()
        self.config = config.validate()
        f = config.feature_size
        self.Aggregate_clip = RelationBlock(f)
        self.dropout = nn.Dropout(DROPOUT)
        self.classfier = Classifier(f)  # sic: the published tensor names spell it so
        grids = config.active_grids
        self.Aggregate_patch = nn.ModuleList(RelationBlock(f) for _ in grids)
        self.patch_to_clip = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(f, f // 2, kernel_size=3, stride=1, padding=patch_conv_padding(g)),
                nn.ReLU(),
                nn.BatchNorm2d(f // 2),
            )
            for g in grids
        )
        self.linear_out = nn.ModuleList(
            nn.Linear(f // 2 * patch_map_size(g)[0] * patch_map_size(g)[1], f) for g in grids
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for block in [self.Aggregate_clip, *self.Aggregate_patch]:
            nn.init.zeros_(block.non_local.W[1].weight)
            nn.init.zeros_(block.non_local.W[1].bias)

    # -- the spatial part: never mixes snippets ----------------------------------------
    def patch_delta(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch relations of each snippet: [N, ΣP, F] -> [N, F], to add to every crop."""
        n, f = patches.shape[0], self.config.feature_size
        delta = patches.new_zeros(n, f)
        start = 0
        for i, grid in enumerate(self.config.active_grids):
            rows, cols = grid_shape(grid)
            p = patches[:, start : start + rows * cols]
            start += rows * cols
            related = self.Aggregate_patch[i](p)                     # [N, P, F]
            image = related.transpose(1, 2).reshape(n, f, rows, cols)
            mapped = self.patch_to_clip[i](image)                     # [N, F/2, h, w]
            out = torch.relu(self.linear_out[i](mapped.reshape(n, -1)))
            if grid == 47:  # the published model drops out only on its finest grid
                out = self.dropout(out)
            delta = delta + out
        return delta

    def fuse(self, crops: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """[N, C, F] crops + [N, ΣP, F] patches -> [N, C, F] crop features with patch relations."""
        if not self.config.active_grids:
            return crops
        return crops + self.patch_delta(patches).unsqueeze(1)

    # -- the temporal part --------------------------------------------------------------
    def clip_features(self, crops: torch.Tensor) -> torch.Tensor:
        """[B, C, T, F] -> [B, C, T, F]: clip relations over time, then the dropout whose
        output the training loss measures (feature magnitudes)."""
        b, c, t, f = crops.shape
        return self.dropout(self.Aggregate_clip(crops.reshape(b * c, t, f))).reshape(b, c, t, f)

    def crop_scores(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C, T, F] -> [B, C, T] snippet scores per crop."""
        return self.classfier(features).squeeze(-1)

    # -- whole model -----------------------------------------------------------------
    def split_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C+ΣP, T, F] -> crops [B, C, T, F], patches [B, ΣP, T, F]."""
        expected = self.config.crops + sum(self.config.patches)
        if x.dim() != 4 or x.shape[1] != expected or x.shape[3] != self.config.feature_size:
            raise ValueError(
                f"SSRL stage {self.config.stage} expects input [B, {expected}, T, "
                f"{self.config.feature_size}], got {list(x.shape)}"
            )
        c = self.config.crops
        return x[:, :c], x[:, c:]

    def fused_crops(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C+ΣP, T, F] -> [B, C, T, F] crop features after the patch branch."""
        crops, patches = self.split_input(x)
        if not self.config.active_grids:
            return crops
        b, c, t, f = crops.shape
        per_snippet_crops = crops.permute(0, 2, 1, 3).reshape(b * t, c, f)
        per_snippet_patches = patches.permute(0, 2, 1, 3).reshape(b * t, -1, f)
        fused = self.fuse(per_snippet_crops, per_snippet_patches)
        return fused.reshape(b, t, c, f).permute(0, 2, 1, 3)

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For training: (crop scores [B, C, T], clip features [B, C, T, F])."""
        features = self.clip_features(self.fused_crops(x))
        return self.crop_scores(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C+ΣP, T, F] -> crop-averaged snippet scores [B, T]."""
        scores, _ = self.forward_parts(x)
        return scores.mean(dim=1)
