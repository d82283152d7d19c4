"""Metrics and losses against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from visionfm.dense.losses import focal_loss, heatmap_kl, soft_dice_loss
from visionfm.dense.metrics import (
    SegmentationMeter,
    auc_from_histograms,
    confusion,
    hd95,
    radial_errors,
    scores_from_confusion,
)


def test_confusion_scores_by_hand():
    pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
    gt = np.array([[1, 0, 0], [1, 1, 0]], bool)
    assert confusion(pred, gt) == (2, 1, 1, 2)
    s = scores_from_confusion(2, 1, 1, 2)
    assert s["dice"] == pytest.approx(4 / 6) and s["iou"] == pytest.approx(0.5)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(2 / 3)
    fov = np.array([[1, 1, 1], [0, 0, 0]], bool)  # only the first row counts
    assert confusion(pred, gt, fov) == (1, 1, 0, 1)


def test_auc_mann_whitney_by_hand():
    pos, neg = [0.9, 0.8, 0.3], [0.7, 0.2]  # 5 of 6 pairs ordered correctly
    bins = 100
    hp = np.bincount((np.array(pos) * bins).astype(int), minlength=bins)
    hn = np.bincount((np.array(neg) * bins).astype(int), minlength=bins)
    assert auc_from_histograms(hp, hn) == pytest.approx(5 / 6)
    assert auc_from_histograms(hp, hp) == pytest.approx(0.5)  # identical scores: ties count half


def test_hd95_two_squares():
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.zeros((20, 20), bool)
    b[5:10, 8:13] = True  # shifted 3 px right: every boundary point at most 3 px from the other boundary
    assert hd95(a, a) == 0.0
    assert hd95(a, b) == pytest.approx(3.0)
    assert math.isnan(hd95(a, np.zeros_like(a)))


def test_meter_pools_and_reports_each_class():
    prob = np.array([[[0.9, 0.8], [0.3, 0.2]]])
    gt = np.array([[[True, False], [True, False]]])
    m = SegmentationMeter(["c"], bins=100)
    m.update(prob, gt)
    r = m.compute()["c"]
    # pred = [[1,1],[0,0]]: tp 1, fp 1, fn 1, tn 1; AUC: pos {0.9, 0.3} vs neg {0.8, 0.2}: 3 of 4 pairs.
    assert r["dice"] == pytest.approx(0.5) and r["auc"] == pytest.approx(0.75)
    assert r["sensitivity"] == pytest.approx(0.5) and r["specificity"] == pytest.approx(0.5)


def test_losses_by_hand():
    logits = torch.tensor([[[[0.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    # sigmoid(0)=0.5: BCE = ln 2 per pixel; focal gamma 2: (1-0.5)^2 ln2.
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(math.log(2))
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(0.25 * math.log(2))
    # Dice (eps 1): 1 - (2*0.5 + 1) / (1 + 1 + 1) = 1/3.
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 / 3)
    valid = torch.tensor([[[[1.0, 0.0]]]])  # second pixel outside the FOV: ignored
    assert soft_dice_loss(logits, target, valid).item() == pytest.approx(1 - 2 / 2.5)


def test_radial_errors():
    e = radial_errors(np.array([[[0.0, 0.0], [1.0, 1.0]]]), np.array([[[3.0, 4.0], [1.0, 1.0]]]))
    assert e.tolist() == [[5.0, 0.0]]


def test_heatmap_kl_by_hand():
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # Uniform logits: KL(one-hot || uniform over 4) = ln 4; logits matching the target give ~0.
    assert heatmap_kl(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(math.log(4))
    assert heatmap_kl(torch.tensor([[[[20.0, 0.0], [0.0, 0.0]]]]), target).item() < 1e-7


def test_hd95_counts_images_it_cannot_measure():
    gt = np.zeros((1, 10, 10), bool)
    gt[0, 2:5, 2:5] = True
    m = SegmentationMeter(["c"], bins=10)
    m.update(np.zeros((1, 10, 10)), gt)  # a missed structure: no distance exists
    m.update(gt.astype(float), gt)  # a perfect one: HD95 0
    r = m.compute()["c"]
    assert r["hd95"] == 0.0 and r["hd95_undefined"] == 1.0
    fov = np.zeros((10, 10), bool)  # the structure lies outside the field of view: nothing to measure
    m = SegmentationMeter(["c"], bins=10)
    m.update(np.zeros((1, 10, 10)), gt, fov)
    assert math.isnan(m.compute()["c"]["hd95"]) and m.compute()["c"]["hd95_undefined"] == 0.0
