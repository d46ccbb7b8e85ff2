"""The SSRL loss (SPEC §4) against values worked out by hand on tiny tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from training.loss import LossWeights, feature_magnitudes, ssrl_loss

ONES = torch.ones(1, 4)


def one_crop_batch():
    """One normal and one abnormal video, 1 crop, 4 snippets, F = 2 (norms chosen to be round)."""
    scores = torch.tensor([[[0.1, 0.2, 0.3, 0.4]],      # normal
                           [[0.5, 0.9, 0.2, 0.1]]])     # abnormal
    features = torch.tensor([[[[3., 4.], [0., 1.], [6., 8.], [1., 0.]]],      # norms 5, 1, 10, 1
                             [[[0., 2.], [30., 40.], [1., 0.], [0., 0.]]]])   # norms 2, 50, 1, 0
    return scores, features


def test_published_constants_are_the_defaults():
    w = LossWeights()
    assert (w.mask_dropout, w.alpha, w.margin, w.sparsity, w.smoothness) == (0.7, 1e-4, 100.0, 8e-3, 8e-4)
    assert w.top_k(32) == 3   # k = 32 // 10


def test_every_term_by_hand():
    scores, features = one_crop_batch()
    t = ssrl_loss(scores, features, normal=1, weights=LossWeights(k=1), masks=(ONES, ONES))
    # Largest magnitudes: normal snippet 2 (norm 10), abnormal snippet 1 (norm 50).
    assert t.normal_index.tolist() == [[2]] and t.abnormal_index.tolist() == [[1]]
    # BCE of the video scores 0.3 (label 0) and 0.9 (label 1).
    bce = -(math.log(0.7) + math.log(0.9)) / 2                        # 0.2310181
    assert float(t.bce) == pytest.approx(bce, rel=1e-6)
    assert float(t.magnitude) == pytest.approx((abs(100 - 50) + 10) ** 2, rel=1e-6)   # 3600
    assert float(t.sparsity) == pytest.approx(8e-3 * math.sqrt(0.25 + 0.81 + 0.04 + 0.01), rel=1e-6)
    assert float(t.smoothness) == pytest.approx(8e-4 * (0.16 + 0.49 + 0.01), rel=1e-5)   # 5.28e-4
    assert float(t.total) == pytest.approx(0.2310181 + 0.36 + 0.0084285 + 0.000528, abs=1e-6)


def test_the_mask_takes_part_in_the_choice():
    scores, features = one_crop_batch()
    drop_best = torch.tensor([[1., 0., 1., 1.]])   # the abnormal video's norm-50 snippet is masked out
    t = ssrl_loss(scores, features, normal=1, weights=LossWeights(k=1), masks=(ONES, drop_best))
    assert t.abnormal_index.tolist() == [[0]]      # then norm 2 wins: score 0.5
    assert float(t.bce) == pytest.approx(-(math.log(0.7) + math.log(0.5)) / 2, rel=1e-6)
    assert float(t.magnitude) == pytest.approx((100 - 2 + 10) ** 2, rel=1e-6)            # 11664


def test_crops_are_averaged_for_choice_and_scores_but_paired_for_the_margin():
    # 1 normal + 1 abnormal video, 2 crops, 2 snippets, F = 1 (a norm is the absolute value).
    scores = torch.tensor([[[0.2, 0.6], [0.4, 0.0]],      # normal: crop mean 0.3, 0.3
                           [[0.5, 0.7], [0.9, 0.9]]])     # abnormal: crop mean 0.7, 0.8
    features = torch.tensor([[[[1.], [4.]], [[5.], [0.]]],        # magnitudes (1+5)/2 = 3, (4+0)/2 = 2
                             [[[10.], [60.]], [[20.], [80.]]]])   # 15, 70
    t = ssrl_loss(scores, features, normal=1, weights=LossWeights(k=1), masks=(torch.ones(1, 2), torch.ones(1, 2)))
    assert feature_magnitudes(features).tolist() == [[3.0, 2.0], [15.0, 70.0]]
    assert t.normal_index.tolist() == [[0]] and t.abnormal_index.tolist() == [[1]]
    assert float(t.bce) == pytest.approx(-(math.log(0.7) + math.log(0.8)) / 2, rel=1e-6)
    # Per crop: (|100 - 60| + 1)² = 1681 and (|100 - 80| + 5)² = 625, mean 1153.
    assert float(t.magnitude) == pytest.approx(1153.0, rel=1e-6)
    assert float(t.sparsity) == pytest.approx(8e-3 * math.sqrt(0.7 ** 2 + 0.8 ** 2), rel=1e-6)
    assert float(t.smoothness) == pytest.approx(8e-4 * 0.1 ** 2, rel=1e-4)
    assert float(t.total) == pytest.approx(0.2899092 + 0.1153 + 0.0085041 + 0.000008, abs=1e-6)


def test_k_snippets_are_averaged_and_smoothness_runs_across_videos():
    # 2 normal + 2 abnormal videos, 1 crop, 2 snippets, k = 2: every snippet is chosen.
    scores = torch.tensor([[[0.1, 0.3]], [[0.2, 0.2]], [[0.2, 0.4]], [[0.8, 0.6]]])
    features = torch.tensor([[[[3.], [1.]]], [[[2.], [2.]]], [[[50.], [70.]]], [[[90.], [110.]]]])
    ones = torch.ones(2, 2)
    t = ssrl_loss(scores, features, normal=2, weights=LossWeights(k=2), masks=(ones, ones))
    # Video scores: 0.2, 0.2 (normal), 0.3, 0.7 (abnormal).
    bce = -(2 * math.log(0.8) + math.log(0.3) + math.log(0.7)) / 4
    assert float(t.bce) == pytest.approx(bce, rel=1e-6)
    # Mean selected features: normal 2, 2; abnormal 60, 100 -> (40 + 2)², (0 + 2)².
    assert float(t.magnitude) == pytest.approx((42 ** 2 + 2 ** 2) / 2, rel=1e-6)
    # The abnormal scores flattened, video after video: 0.2, 0.4, 0.8, 0.6 (0.4 -> 0.8 crosses videos).
    assert float(t.smoothness) == pytest.approx(8e-4 * (0.04 + 0.16 + 0.04), rel=1e-4)
    assert float(t.sparsity) == pytest.approx(8e-3 * math.sqrt(0.04 + 0.16 + 0.64 + 0.36), rel=1e-6)


def test_random_masks_are_drawn_as_the_published_model_draws_them():
    torch.manual_seed(3)
    scores = torch.rand(8, 2, 32)
    features = torch.rand(8, 2, 32, 16)
    torch.manual_seed(11)
    drawn = ssrl_loss(scores, features, normal=4)
    torch.manual_seed(11)
    abnormal = F.dropout(torch.ones(4, 32), 0.7, training=True)   # abnormal first, then normal
    normal = F.dropout(torch.ones(4, 32), 0.7, training=True)
    given = ssrl_loss(scores, features, normal=4, masks=(normal, abnormal))
    assert torch.equal(drawn.normal_index, given.normal_index)
    assert torch.equal(drawn.abnormal_index, given.abnormal_index)
    assert float(drawn.total) == float(given.total)
    kept = abnormal[abnormal != 0]
    assert 0 < kept.numel() < abnormal.numel() and torch.allclose(kept, torch.full_like(kept, 1 / 0.3))


def test_gradients_reach_the_scores_and_features_only_through_the_chosen_snippets():
    scores, features = one_crop_batch()
    scores.requires_grad_(True)
    features.requires_grad_(True)
    t = ssrl_loss(scores, features, normal=1, weights=LossWeights(k=1), masks=(ONES, ONES))
    t.total.backward()
    # Normal features: only snippet 2 was chosen; abnormal features: only snippet 1.
    assert features.grad[0, 0, [0, 1, 3]].abs().sum() == 0 and features.grad[0, 0, 2].abs().sum() > 0
    assert features.grad[1, 0, [0, 2, 3]].abs().sum() == 0 and features.grad[1, 0, 1].abs().sum() > 0
    # Every abnormal score pays sparsity and smoothness; normal scores only through the BCE.
    assert (scores.grad[1] != 0).all() and scores.grad[0, 0, [0, 1, 3]].abs().sum() == 0


def test_unpaired_batches_are_refused():
    scores, features = one_crop_batch()
    with pytest.raises(ValueError, match="pairs normal and abnormal"):
        ssrl_loss(scores, features, normal=2)
