"""Known-answer tests for the recognition metrics: hand-computed values, cross-checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, cohen_kappa_score, f1_score, roc_auc_score

from visionfm.evaluation import (
    classification_metrics,
    expected_calibration_error,
    multilabel_metrics,
    regression_metrics,
    reliability_bins,
)

# 3 classes, 6 samples; no confidence falls on a bin edge of 15 bins
Y3 = np.array([0, 0, 1, 1, 2, 2])
P3 = np.array(
    [[0.7, 0.2, 0.1], [0.3, 0.45, 0.25], [0.2, 0.62, 0.18], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7]]
)
NAMES3 = ["normal", "mild", "severe"]


def test_multiclass_hand_computed():
    m = classification_metrics(Y3, P3, NAMES3, ordinal=True)
    # AUROC one-vs-rest by counting positive/negative pairs: class 0 -> 7/8, class 1 -> 7/8, class 2 -> 8/8
    assert m["auroc"] == pytest.approx({"normal": 7 / 8, "mild": 7 / 8, "severe": 1.0, "macro": (7 / 8 * 2 + 1) / 3})
    # AP: positives at ranks 1 and 3 -> 0.5 * 1 + 0.5 * 2/3
    assert m["ap"] == pytest.approx({"normal": 5 / 6, "mild": 5 / 6, "severe": 1.0, "macro": (5 / 6 * 2 + 1) / 3})
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert m["f1"] == pytest.approx({"normal": 0.5, "mild": 0.5, "severe": 1.0, "macro": 2 / 3})
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    # quadratic kappa: 1 - sum(w*O)/sum(w*E) = 1 - (1/12)/(1/3)
    assert m["kappa_quadratic"] == pytest.approx(0.75)
    # ECE: bins {0.7 x3 correct}, {0.45 wrong}, {0.62 correct}, {0.5 wrong}
    assert m["ece"] == pytest.approx(3 / 6 * 0.3 + 0.45 / 6 + 0.38 / 6 + 0.5 / 6)
    assert m["n"] == 6 and m["notes"] == []


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    p = rng.dirichlet(np.ones(4), 300) * 0.5 + np.eye(4)[y] * 0.5 * rng.random((300, 1))
    p /= p.sum(1, keepdims=True)
    m = classification_metrics(y, p, list("abcd"), ordinal=True)
    assert m["auroc"]["macro"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    onehot = np.eye(4)[y]
    assert m["ap"]["macro"] == pytest.approx(average_precision_score(onehot, p, average="macro"))
    assert m["f1"]["macro"] == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
    assert m["kappa_quadratic"] == pytest.approx(cohen_kappa_score(y, p.argmax(1), weights="quadratic"))
    assert "kappa_quadratic" not in classification_metrics(y, p, list("abcd"))


def test_binary_reports_positive_class_and_accepts_1d_scores():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(y, p1, ["neg", "pos"])
    assert m["auroc"] == pytest.approx({"pos": 0.75, "macro": 0.75})  # 3 of 4 pairs ordered
    assert m["ap"] == pytest.approx({"pos": 5 / 6, "macro": 5 / 6})
    assert m["ap"]["pos"] == pytest.approx(average_precision_score(y, p1))
    assert m == classification_metrics(y, np.stack([1 - p1, p1], 1), ["neg", "pos"])


def test_ap_uses_scores_not_thresholded_predictions():
    y = np.array([0, 1, 0, 1])
    # all scores below 0.5: thresholded predictions are all negative, but the ranking is perfect
    m = classification_metrics(y, np.array([0.1, 0.3, 0.2, 0.4]), ["no", "yes"])
    assert m["ap"]["yes"] == 1.0 and m["auroc"]["yes"] == 1.0
    assert m["accuracy"] == 0.5


def test_absent_class_is_nan_with_note_and_excluded_from_macro():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert np.isnan(m["auroc"]["c"]) and m["auroc"]["macro"] == 1.0
    assert any("auroc[c]" in note for note in m["notes"])


def test_ece_perfect_and_overconfident():
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(y, np.eye(2)[y]) == 0.0
    assert expected_calibration_error(y, np.eye(2)[1 - y]) == 1.0
    bins = reliability_bins(Y3, P3, n_bins=15)
    assert bins["count"].sum() == 6 and bins["count"][10] == 3 and np.isnan(bins["accuracy"][0])


def test_multilabel_masks_missing_labels():
    y = np.array([[1, 0], [0, np.nan], [1, np.nan], [0, 1], [1, 0], [0, 1]])
    p = np.array([[0.9, 0.2], [0.3, 0.8], [0.6, 0.9], [0.4, 0.7], [0.7, 0.4], [0.2, 0.6]])
    m = multilabel_metrics(y, p, ["dr", "dme"])
    assert m["n_labelled"] == {"dr": 6, "dme": 4}
    known = ~np.isnan(y[:, 1])
    assert m["auroc"]["dme"] == pytest.approx(roc_auc_score(y[known, 1], p[known, 1]))
    assert m["auroc"]["dme"] == 1.0  # the masked rows would break the ranking if they were counted as negatives
    assert m["ap"]["dme"] == pytest.approx(average_precision_score(y[known, 1], p[known, 1]))
    assert m["f1"]["dme"] == pytest.approx(f1_score(y[known, 1], p[known, 1] >= 0.5))
    scrambled = p.copy()
    scrambled[~known, 1] = [0.0, 1.0]  # scores of missing labels must not matter
    assert multilabel_metrics(y, scrambled, ["dr", "dme"]) == m


def test_multilabel_one_class_present_gives_nan_and_note():
    y = np.array([[1, 0], [0, 0], [1, np.nan]])
    p = np.array([[0.8, 0.1], [0.2, 0.2], [0.7, 0.9]])
    m = multilabel_metrics(y, p, ["a", "b"])
    assert np.isnan(m["auroc"]["b"]) and np.isnan(m["ap"]["b"])
    assert m["auroc"]["macro"] == m["auroc"]["a"] == 1.0
    assert any("auroc[b]" in note for note in m["notes"])


def test_regression_known_answers():
    t = np.array([[1.0, 2.0], [2.0, 0.0], [3.0, 4.0]])
    q = np.array([[1.5, 2.0], [2.0, 1.0], [2.0, 5.0]])
    m = regression_metrics(t, q, ["x", "y"], tolerance=0.1)
    assert m["mae"] == pytest.approx({"x": 0.5, "y": 2 / 3, "macro": 7 / 12})
    assert m["relative_error"] == pytest.approx(
        {"x": (0.5 + 0 + 1 / 3) / 3, "y": 0.125, "macro": ((0.5 + 1 / 3) / 3 + 0.125) / 2}
    )
    assert m["n_zero_excluded"] == {"x": 0, "y": 1}
    assert m["accuracy"]["x"] == pytest.approx(1 - 0.5 / 2) and m["accuracy"]["y"] == pytest.approx(1 - (2 / 3) / 2)
    assert m["within_tolerance"] == pytest.approx({"x": 1 / 3, "y": 0.5, "macro": 5 / 12})
    assert m["r2"]["x"] == pytest.approx(1 - 1.25 / 2)
    assert m["pearson"]["x"] == pytest.approx(0.5 / np.sqrt(2 * 1 / 6))


def test_regression_masks_missing_targets():
    t = np.array([[1.0], [np.nan], [3.0]])
    m = regression_metrics(t, np.array([[2.0], [100.0], [3.0]]), ["hb"])
    assert m["n"] == {"hb": 2} and m["mae"]["hb"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "y, p, names, match",
    [
        (Y3[:5], P3, NAMES3, "probs has 6 rows but the labels have 5"),
        (Y3, np.where(np.eye(6, 3) > 0, np.nan, P3), NAMES3, "probs contains NaN"),
        (np.array([0, 0, 1, 1, 2, 3]), P3, NAMES3, "y_true contains class index 3 out of range"),
        (Y3, P3, ["a", "b"], "class_names has 2 entries"),
        (Y3, P3 * 10 - 5, NAMES3, "probs must be probabilities"),
        (np.array([0, 0, 1, 1, 2, -1]), P3, NAMES3, "y_true contains negative"),
        (Y3.astype(float) + 0.5, P3, NAMES3, "y_true must hold integer"),
    ],
)
def test_classification_bad_input_names_the_argument(y, p, names, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, p, names)


def test_multilabel_and_regression_bad_input():
    with pytest.raises(ValueError, match="y_true must hold 0, 1 or NaN"):
        multilabel_metrics(np.array([[2.0, 0.0]]), np.array([[0.5, 0.5]]), ["a", "b"])
    with pytest.raises(ValueError, match="probs has 1 columns but there are 2 names"):
        multilabel_metrics(np.array([[1.0, 0.0]]), np.array([[0.5]]), ["a", "b"])
    with pytest.raises(ValueError, match="y_pred contains NaN"):
        regression_metrics(np.ones((2, 1)), np.array([[1.0], [np.nan]]), ["x"])
    with pytest.raises(ValueError, match="y_pred has 3 rows"):
        regression_metrics(np.ones((2, 1)), np.ones((3, 1)), ["x"])
