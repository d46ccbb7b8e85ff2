"""The SSRL training loss (SPEC §4), weakly supervised: one label per video.

The batch holds B normal videos then B abnormal ones. Per video, the k snippets with the
largest feature magnitude (after a dropout mask over the magnitudes) stand for the video:
their mean score is the video score (BCE against the label) and their mean feature is pushed
towards magnitude 0 (normal) and the margin (abnormal). The abnormal snippet scores also pay
for sparsity and for roughness over time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """The published constants are the defaults."""
    k: int | None = None          # snippets per video; None: segments // 10 (3 for 32)
    mask_dropout: float = 0.7     # dropout probability of the magnitude mask
    alpha: float = 1e-4           # weight of the feature-magnitude term
    margin: float = 100.0         # magnitude an abnormal video's selected features are pushed to
    sparsity: float = 8e-3
    smoothness: float = 8e-4

    def top_k(self, segments: int) -> int:
        k = self.k if self.k is not None else segments // 10
        if not 1 <= k <= segments:
            raise ValueError(f"top-k of {k} snippets does not fit videos of {segments} segments")
        return k


@dataclass
class LossTerms:
    total: torch.Tensor
    bce: torch.Tensor
    magnitude: torch.Tensor       # unweighted: mean((|m - ‖f_abn‖| + ‖f_nor‖)²)
    sparsity: torch.Tensor        # weighted
    smoothness: torch.Tensor      # weighted
    normal_index: torch.Tensor    # [B, k] selected snippets
    abnormal_index: torch.Tensor


def feature_magnitudes(features: torch.Tensor) -> torch.Tensor:
    """[V, C, T, F] -> [V, T]: L2 norm over F, averaged over crops."""
    return torch.linalg.vector_norm(features, dim=-1).mean(dim=1)


def magnitude_mask(shape, p: float, device) -> torch.Tensor:
    """A dropout applied to ones, as the published model draws it (kept entries are 1/(1-p))."""
    return F.dropout(torch.ones(shape, device=device), p=p, training=True)


def select_top_k(magnitudes: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """[V, T] magnitudes × mask -> [V, k] indices of the largest."""
    return torch.topk(magnitudes * mask, k, dim=1).indices


def selected_feature_norms(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """‖mean over the k selected snippets of the features‖ per video and crop: [V, C]."""
    v, c, t, f = features.shape
    gather = index[:, None, :, None].expand(v, c, index.shape[1], f)
    return torch.linalg.vector_norm(torch.gather(features, 2, gather).mean(dim=2), dim=-1)


def ssrl_loss(crop_scores: torch.Tensor, features: torch.Tensor, normal: int,
              weights: LossWeights = LossWeights(), masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> LossTerms:
    """crop_scores [2B, C, T] and features [2B, C, T, F] (the model's `forward_parts`), the
    first `normal` videos normal and the rest abnormal. `masks` (normal, abnormal), each
    [B, T], replaces the random magnitude masks (tests, reproductions)."""
    videos, crops, t = crop_scores.shape
    if features.shape[:3] != crop_scores.shape:
        raise ValueError(f"scores {list(crop_scores.shape)} and features {list(features.shape)} disagree")
    if normal * 2 != videos:
        raise ValueError(f"the loss pairs normal and abnormal videos: got {normal} normal of {videos}")
    k = weights.top_k(t)
    scores = crop_scores.mean(dim=1)                   # [2B, T] crop-averaged snippet scores
    magnitudes = feature_magnitudes(features)         # [2B, T]
    if masks is None:
        # Drawn abnormal first, then normal: the published order of the random draws.
        abnormal_mask = magnitude_mask((normal, t), weights.mask_dropout, scores.device)
        normal_mask = magnitude_mask((normal, t), weights.mask_dropout, scores.device)
    else:
        normal_mask, abnormal_mask = masks
    with torch.no_grad():
        idx_n = select_top_k(magnitudes[:normal], normal_mask, k)
        idx_a = select_top_k(magnitudes[normal:], abnormal_mask, k)
    video_n = torch.gather(scores[:normal], 1, idx_n).mean(dim=1)
    video_a = torch.gather(scores[normal:], 1, idx_a).mean(dim=1)
    labels = torch.cat([torch.zeros_like(video_n), torch.ones_like(video_a)])
    bce = F.binary_cross_entropy(torch.cat([video_n, video_a]), labels)

    norm_n = selected_feature_norms(features[:normal], idx_n)       # [B, C]
    norm_a = selected_feature_norms(features[normal:], idx_a)
    magnitude = ((weights.margin - norm_a).abs() + norm_n).pow(2).mean()

    abnormal_scores = scores[normal:].reshape(-1)     # all abnormal snippet scores, video after video
    sparsity = weights.sparsity * torch.linalg.vector_norm(abnormal_scores)
    smoothness = weights.smoothness * (abnormal_scores[1:] - abnormal_scores[:-1]).pow(2).sum()
    total = bce + weights.alpha * magnitude + sparsity + smoothness
    return LossTerms(total, bce, magnitude, sparsity, smoothness, idx_n, idx_a)
