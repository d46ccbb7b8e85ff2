"""The temporal head at chosen positions of a window: `temporal_at`, exported beside `temporal`.

Live, the engine needs the score of one snippet of each camera's window (the newest, or with a
look-ahead of d the one d before it, and at the end of a stream the last d), yet `temporal`
computes all W. The relation block's local part reaches only a few positions: the output at t
is conv_5 (kernel 3) over the fused features at t-1..t+1, and each of those is the dilated
convolutions (dilations 1, 2, 4) over x at most 4 positions away. Its non-local part reaches
every position, but only through conv_4, φ and g, which are per-position kernel-1
convolutions and cheap. So at K positions this graph runs conv_5 K times, the dilated
convolutions 3K times and the rest over the window: at the published size about a tenth of
`temporal`'s arithmetic for one position of 32. It computes the same sums as `temporal`
(zero padding at the window's ends included); only the order of float additions differs.

Inputs: features [B, T, C, F] (as `temporal`), positions int64 [K] (each in 0..T-1, shared by
the batch). Output: scores [B, K], crop-averaged, scores[:, k] = temporal(features)[:, positions[k]].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.relation import RelationBlock
from training.ssrl import SSRL

DILATIONS = (1, 2, 4)      # conv_1, conv_2, conv_3 of the relation block
# Zero padding of x on each side: a fused position lies at most 1 outside the window (conv_5's
# neighbours) and the widest dilated convolution reads 4 beyond it.
REACH = max(DILATIONS) + 1


def _taps_linear(taps: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """taps [N, S, 3, F] (a kernel-3 convolution's three inputs at S positions) -> [N, S, O]."""
    n, s, k, f = taps.shape
    weight = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, k * f)  # tap-major, as taps
    return F.linear(taps.reshape(n, s, k * f), weight, conv.bias)


def _norm(values: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """Eval-mode batch normalisation of [N, S, channels], as the per-channel affine map it is
    (its scale and shift are folded to constants at export; no transposes around it)."""
    if isinstance(bn, nn.Identity):  # folded into the convolution before it (export.temporal_weights)
        return values
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return values * scale + (bn.bias - bn.running_mean * scale)


def _pointwise(values: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A kernel-1 convolution of [N, S, channels]."""
    return F.linear(values, conv.weight[:, :, 0], conv.bias)


class RelationAt(nn.Module):
    """RelationBlock.forward(x)[:, positions] without computing the other positions' local part."""

    def __init__(self, block: RelationBlock):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:  # x [N, T, F]
        b, t = self.block, x.shape[1]
        # Non-local over the whole window: conv_4, φ and g everywhere, θ only where fused is needed.
        z = torch.relu(_pointwise(x, b.conv_4[0]))                      # [N, T, F/4]
        phi = _pointwise(z, b.non_local.phi)                             # [N, T, inner]
        g = _pointwise(z, b.non_local.g)
        # Fused features at each output position and its two neighbours (conv_5's inputs).
        around = (positions[:, None] + torch.arange(-1, 2)).reshape(-1)  # [3K]
        inside = ((around >= 0) & (around < t)).to(x.dtype)[None, :, None]
        padded = F.pad(x, (0, 0, REACH, REACH))                          # zeros, as the convolutions pad
        branches = []
        for conv, d in zip((b.conv_1, b.conv_2, b.conv_3), DILATIONS):
            taps = padded[:, (around[:, None] + REACH + torch.tensor([-d, 0, d]))]  # [N, 3K, 3, F]
            branches.append(_norm(torch.relu(_taps_linear(taps, conv[0])), conv[2]))
        z_at = z[:, around.clamp(0, t - 1)]
        theta = _pointwise(z_at, b.non_local.theta)                      # [N, 3K, inner]
        y = torch.matmul(torch.matmul(theta, phi.transpose(1, 2)) / t, g)
        w_conv, w_norm = b.non_local.W
        local = _norm(_pointwise(y, w_conv), w_norm) + z_at
        fused = torch.cat(branches + [local], dim=2) * inside           # conv_5's zero padding
        n, f = x.shape[0], x.shape[2]
        out = _taps_linear(fused.reshape(n, -1, 3, f), b.conv_5[0])     # [N, K, F]
        return _norm(torch.relu(out), b.conv_5[2]) + x[:, positions]


class TemporalAt(nn.Module):
    def __init__(self, model: SSRL):
        super().__init__()
        self.model = model
        self.relation = RelationAt(model.Aggregate_clip)

    def forward(self, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, t, c, f = features.shape
        x = features.permute(0, 2, 1, 3).reshape(b * c, t, f)
        related = self.model.dropout(self.relation(x, positions))        # [B*C, K, F]
        scores = self.model.classfier(related).squeeze(-1)               # [B*C, K]
        return scores.reshape(b, c, -1).mean(dim=1)
