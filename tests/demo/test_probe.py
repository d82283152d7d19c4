"""The demo's probe: linear probes with known answers, collapse indicators of features."""

from __future__ import annotations

import numpy as np
import pytest

from visionfm.demo_probe import feature_health, linear_probe_scores


def _blobs(rng, n, classes=3, dim=6, shift=8.0):
    y = np.arange(n) % classes
    return rng.normal(size=(n, dim)) + shift * np.eye(classes, dim)[y], y


def test_separable_classes_score_one_and_noise_about_half():
    rng = np.random.default_rng(0)
    r = linear_probe_scores("classification", _blobs(rng, 60), _blobs(rng, 30))
    assert r.value == 1.0 and r.ci == (1.0, 1.0) and r.n.replace("\u200b", "") == "30 test; per class 10/10/10"
    noise = linear_probe_scores(
        "classification",
        (rng.normal(size=(300, 6)), np.arange(300) % 3),
        (rng.normal(size=(300, 6)), np.arange(300) % 3),
    )
    assert abs(noise.value - 0.5) < 0.08 and noise.ci[0] < 0.5 < noise.ci[1]


def test_multilabel_ignores_unknown_labels_and_regression_is_r2():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 4))
    y = (x[:, :2] > 0).astype(float)
    y[::5, 1] = np.nan  # unknown
    r = linear_probe_scores("multilabel", (x[:60], y[:60]), (x[60:], y[60:]))
    assert r.value > 0.95 and "positives per label" in r.n
    t = x @ np.array([[1.0], [2.0], [0.0], [-1.0]])
    reg = linear_probe_scores("regression", (x[:60], t[:60]), (x[60:], t[60:]))
    assert reg.value > 0.95


def test_feature_health_known_answers():
    same = np.ones((8, 16))
    h = feature_health(same)
    assert h["feature_std"] == pytest.approx(0.0, abs=1e-6) and h["effective_rank"] == 0.0
    assert h["mean_pairwise_cosine"] == pytest.approx(1.0)
    eye = np.eye(8)
    h = feature_health(eye)
    assert h["mean_pairwise_cosine"] == pytest.approx(0.0) and h["effective_rank"] == pytest.approx(7.0, rel=1e-3)


def test_binary_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from visionfm.demo_probe import binary_auroc

    rng = np.random.default_rng(3)
    y = rng.random(50) < 0.3
    s = np.round(rng.random(50), 1)  # many ties
    assert binary_auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert binary_auroc(np.array([True, False]), np.array([1.0, 0.0])) == 1.0
    assert np.isnan(binary_auroc(np.ones(4, bool), np.arange(4.0)))
