"""The relation block of SPEC §3, used both over time (snippets) and over space (patches).

Module and attribute names mirror the published checkpoint tensor names
(`conv_1.0.weight`, `non_local.W.1.running_mean`, ...), so published weights load as they are.
"""
import torch
from torch import nn


class NonLocal1d(nn.Module):
    """Embedded-dot-product non-local block, affinity divided by the number of positions."""

    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.inner = inner
        self.g = nn.Conv1d(channels, inner, kernel_size=1)
        self.theta = nn.Conv1d(channels, inner, kernel_size=1)
        self.phi = nn.Conv1d(channels, inner, kernel_size=1)
        self.W = nn.Sequential(nn.Conv1d(inner, channels, kernel_size=1), nn.BatchNorm1d(channels))
        # The residual branch starts switched off (SPEC: W's BatchNorm weight and bias at zero).
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, L]
        g_x = self.g(x).transpose(1, 2)            # [B, L, inner]
        theta_x = self.theta(x).transpose(1, 2)    # [B, L, inner]
        phi_x = self.phi(x)                        # [B, inner, L]
        affinity = torch.matmul(theta_x, phi_x) / x.shape[-1]
        y = torch.matmul(affinity, g_x).transpose(1, 2)  # [B, inner, L]
        return self.W(y) + x


def _dilated_branch(features: int, dilation: int) -> nn.Sequential:
    # Order matters for the checkpoint names: conv (0), ReLU (1), BatchNorm (2).
    return nn.Sequential(
        nn.Conv1d(features, features // 4, kernel_size=3, dilation=dilation, padding=dilation),
        nn.ReLU(),
        nn.BatchNorm1d(features // 4),
    )


class RelationBlock(nn.Module):
    """[B, L, F] -> [B, L, F]: three dilated convolutions and a non-local branch, fused."""

    def __init__(self, features: int = 2048):
        super().__init__()
        if features % 8:
            raise ValueError(f"feature size must be a multiple of 8, got {features}")
        quarter = features // 4
        self.conv_1 = _dilated_branch(features, 1)
        self.conv_2 = _dilated_branch(features, 2)
        self.conv_3 = _dilated_branch(features, 4)
        self.conv_4 = nn.Sequential(nn.Conv1d(features, quarter, kernel_size=1, bias=False), nn.ReLU())
        self.conv_5 = nn.Sequential(
            nn.Conv1d(features, features, kernel_size=3, padding=1, bias=False),
            nn.ReLU(),
            nn.BatchNorm1d(features),
        )
        self.non_local = NonLocal1d(quarter, features // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # [B, F, L]
        local = self.non_local(self.conv_4(x))
        fused = torch.cat((self.conv_1(x), self.conv_2(x), self.conv_3(x), local), dim=1)
        return (self.conv_5(fused) + x).transpose(1, 2)
