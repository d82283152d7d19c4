"""FLAIR's soft-target CLIP loss and the capped logit scale, against hand-computed answers."""

import math

import pytest
import torch

from visionfm.vl.losses import similarity_logits, soft_clip_loss, soft_targets


def test_soft_targets_share_mass_among_pairs_of_one_category():
    t = soft_targets([3, 3, 7])
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(t, expected)
    torch.testing.assert_close(soft_targets([0, 1, 2]), torch.eye(3))  # distinct reports: the plain CLIP loss


def test_soft_clip_loss_known_answers():
    # identity targets, logits 2 on the diagonal: each row's CE is log(1 + e^-2), both directions alike
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert soft_clip_loss(logits, torch.eye(2)).item() == pytest.approx(math.log(1 + math.exp(-2)))
    # one category for both pairs and equal logits: target (1/2, 1/2) against softmax (1/2, 1/2) -> ln 2
    assert soft_clip_loss(torch.zeros(2, 2), soft_targets([5, 5])).item() == pytest.approx(math.log(2))
    # asymmetric logits: the two directions differ and the loss is their mean
    logits = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    i2t = (-math.log(math.e / (math.e + 1)) - math.log(1 / (math.exp(3) + 1))) / 2
    t2i = (-math.log(math.e / (math.e + math.exp(3))) - math.log(1 / 2)) / 2
    assert soft_clip_loss(logits, torch.eye(2)).item() == pytest.approx((i2t + t2i) / 2)


def test_same_category_pairs_are_pulled_together_distinct_ones_pushed_apart():
    def off_diagonal_grad(keys):
        logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]], requires_grad=True)
        soft_clip_loss(logits, soft_targets(keys)).backward()
        return logits.grad[0, 1].item()

    assert off_diagonal_grad([0, 0]) < 0  # descent raises the similarity of two images of one category
    assert off_diagonal_grad([0, 1]) > 0  # and lowers it for different categories (plain CLIP)


def test_logit_scale_is_capped_at_100_and_bad_shapes_fail():
    a = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    assert torch.allclose(similarity_logits(a, a, torch.tensor(10.0)).diagonal(), torch.full((3,), 100.0))
    assert torch.allclose(
        similarity_logits(a, a, torch.tensor(math.log(1 / 0.07))).diagonal(), torch.full((3,), 1 / 0.07)
    )
    with pytest.raises(ValueError, match="equal squares"):
        soft_clip_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="non-empty"):
        soft_targets([])
