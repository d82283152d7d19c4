"""Known-answer tests of the recognition losses (hand-computed numbers, scikit-learn where it has the loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from sklearn.utils.class_weight import compute_class_weight

from visionfm.recognition.losses import (
    class_balanced_weights,
    cross_entropy,
    focal_bce,
    group_cross_entropy,
    inverse_frequency_weights,
    masked_bce,
    multilabel_loss,
    standardised_regression_loss,
)
from visionfm.recognition.schema import OFFICIAL_13, LabelSchema

NAN = float("nan")
L2, L1E = math.log(2), math.log(1 + math.e)  # BCE of logit 0 / of a logit 1 on the wrong side


def test_cross_entropy_matches_sklearn_log_loss():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 2, 2])
    expect = log_loss(y.numpy(), logits.softmax(-1).numpy(), labels=[0, 1, 2])
    assert cross_entropy(logits, y).item() == pytest.approx(expect, rel=1e-6)


def test_masked_bce_ignores_missing_labels():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    target = torch.tensor([[1.0, NAN], [0.0, 1.0]])
    per, n = masked_bce(logits, target)
    assert per.tolist() == pytest.approx([(L2 + L1E) / 2, L1E], rel=1e-6)
    assert n.tolist() == [2, 1]
    # a missing label is not a negative: changing its logit changes nothing
    per2, _ = masked_bce(torch.tensor([[0.0, -50.0], [1.0, -1.0]]), target)
    assert torch.allclose(per, per2)


def test_masked_bce_output_without_labels_gives_zero():
    per, n = masked_bce(torch.zeros(2, 1), torch.full((2, 1), NAN))
    assert per.item() == 0.0 and n.item() == 0


def test_group_cross_entropy_counts_only_one_hot_rows():
    logits = torch.zeros(4, 3)
    target = torch.tensor(
        [
            [0.0, 1.0, 0.0],  # counted: log 3
            [0.0, 0.0, 0.0],  # no member positive (e.g. glaucoma, grade not given): skipped
            [NAN, 1.0, 0.0],  # missing: skipped
            [1.0, 0.0, 0.0],
        ]
    )  # counted: log 3
    loss, n = group_cross_entropy(logits, target)
    assert n.item() == 2 and loss.item() == pytest.approx(math.log(3), rel=1e-6)
    loss, n = group_cross_entropy(logits[1:3], target[1:3])
    assert n.item() == 0 and loss.item() == 0.0


def test_multilabel_loss_official_weights_by_hand():
    # one image: DR-2 (so DR too), logits all 0 -> group CE = log 5, every BCE = log 2
    target = torch.zeros(1, 13)
    target[0, 2] = target[0, 5] = 1
    loss = multilabel_loss(torch.zeros(1, 13), target, OFFICIAL_13)
    # 5 * CE(grade) + 5 * BCE(hypertensive) + 7 * BCE(other binaries)
    assert loss.item() == pytest.approx(5 * math.log(5) + 5 * L2 + 7 * L2, rel=1e-6)
    # every label of the image missing except DR: only that BCE remains
    target = torch.full((1, 13), NAN)
    target[0, 5] = 1
    assert multilabel_loss(torch.zeros(1, 13), target, OFFICIAL_13).item() == pytest.approx(L2, rel=1e-6)


def test_multilabel_loss_custom_schema_and_shape_error():
    s = LabelSchema(["a", "b", "c"], {"g": ["a", "b"]}, {"c": 2.0})
    logits = torch.tensor([[math.log(3), 0.0, 0.0]])  # softmax(a, b) = (3/4, 1/4)
    loss = multilabel_loss(logits, torch.tensor([[1.0, 0.0, 1.0]]), s)
    assert loss.item() == pytest.approx(-math.log(0.75) + 2 * L2, rel=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        multilabel_loss(torch.zeros(1, 2), torch.zeros(1, 2), s)


def test_focal_known_values():
    z, y = torch.tensor([0.0]), torch.tensor([1.0])
    assert focal_bce(z, y, gamma=2.0, alpha=0.25).item() == pytest.approx(0.25 * 0.25 * L2, rel=1e-6)
    z, y = torch.tensor([1.0, -2.0, 0.3]), torch.tensor([0.0, 1.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    assert focal_bce(z, y, gamma=0.0, alpha=None).item() == pytest.approx(bce.item(), rel=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        focal_bce(z, y, gamma=-1)


def test_class_weights_known_values():
    y = np.array([0] * 10 + [1] * 90)
    balanced = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
    assert inverse_frequency_weights([10, 90]) == pytest.approx(balanced)
    eff = np.array([(1 - 0.9**10) / 0.1, (1 - 0.9**90) / 0.1])
    w = 1 / eff
    assert class_balanced_weights([10, 90], beta=0.9) == pytest.approx(w * 2 / w.sum())
    assert class_balanced_weights([10, 90], beta=0.0) == pytest.approx([1.0, 1.0])
    assert inverse_frequency_weights([0, 4]).tolist() == [0.0, 0.5]  # n / (C * n_c), empty class 0


def test_standardised_regression_loss_masks_missing_targets():
    pred = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    target = torch.tensor([[2.0, NAN], [NAN, 10.0]])
    mean, std = torch.tensor([1.0, 10.0]), torch.tensor([2.0, 5.0])
    # known entries: (0 - (2-1)/2)^2 = 0.25 and (0 - 0)^2 = 0 -> mean 0.125
    assert standardised_regression_loss(pred, target, mean, std, "mse").item() == pytest.approx(0.125)
    assert standardised_regression_loss(pred, target, mean, std, "l1").item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown regression loss"):
        standardised_regression_loss(pred, target, mean, std, "huber2")
