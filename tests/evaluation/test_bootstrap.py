"""Bootstrap confidence intervals: bracket the estimate, reproducible by seed, stratified, NaN-safe."""

from __future__ import annotations

import numpy as np
import pytest

from visionfm.evaluation import bootstrap_ci, classification_metrics, resample_indices, with_ci


def _data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def _metrics(y: np.ndarray, p: np.ndarray) -> dict:
    return classification_metrics(y, p, ["a", "b", "c"])


def test_ci_brackets_point_estimate_and_is_reproducible():
    y, p = _data()
    point = _metrics(y, p)
    keys = ["accuracy", "auroc.macro", ("f1", "b"), "ece"]
    ci = with_ci(_metrics, y, p, keys, n_boot=100, seed=1)
    assert list(ci) == ["accuracy", "auroc.macro", "f1.b", "ece"]
    for key, value in [
        ("accuracy", point["accuracy"]),
        ("auroc.macro", point["auroc"]["macro"]),
        ("f1.b", point["f1"]["b"]),
    ]:
        lo, hi = ci[key]
        assert lo < value < hi and hi - lo < 0.3
    assert ci == with_ci(_metrics, y, p, keys, n_boot=100, seed=1)
    assert ci != with_ci(_metrics, y, p, keys, n_boot=100, seed=2)


def test_bootstrap_of_a_mean_matches_the_normal_interval():
    x = np.random.default_rng(0).normal(size=400)
    lo, hi = bootstrap_ci(lambda idx: x[idx].mean(), len(x), n_boot=2000, seed=0)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert (
        bootstrap_ci(lambda idx: x[idx].mean(), len(x), n_boot=50, alpha=0.5)[1]
        - bootstrap_ci(lambda idx: x[idx].mean(), len(x), n_boot=50, alpha=0.5)[0]
        < hi - lo
    )


def test_stratified_resampling_keeps_class_counts():
    y = np.repeat([0, 1, 2], [50, 7, 3])
    for idx in resample_indices(len(y), 20, seed=0, strata=y):
        assert np.bincount(y[idx]).tolist() == [50, 7, 3]
    plain = [np.bincount(y[idx], minlength=3)[2] for idx in resample_indices(len(y), 50, seed=0)]
    assert min(plain) != max(plain)


def test_with_ci_stratifies_classification_by_default():
    y, p = _data(60)
    seen = []

    def spy(yy, pp):
        seen.append(np.bincount(yy, minlength=3).tolist())
        return _metrics(yy, pp)

    with_ci(spy, y, p, ["accuracy"], n_boot=10, seed=0)
    assert all(counts == np.bincount(y, minlength=3).tolist() for counts in seen)


def test_nan_replicates_are_dropped():
    calls = iter(range(100))
    lo, hi = bootstrap_ci(lambda idx: float("nan") if next(calls) % 2 else 1.0, 10, n_boot=100)
    assert (lo, hi) == (1.0, 1.0)
    lo, hi = bootstrap_ci(lambda idx: float("nan"), 10, n_boot=10)
    assert np.isnan(lo) and np.isnan(hi)


def test_bad_keys_and_arguments():
    y, p = _data(30)
    with pytest.raises(ValueError, match="keys: 'auroc.zzz' not found"):
        with_ci(_metrics, y, p, ["auroc.zzz"], n_boot=5)
    with pytest.raises(ValueError, match="not a number"):
        with_ci(_metrics, y, p, ["auroc"], n_boot=5)
    with pytest.raises(ValueError, match="probs has 29 rows"):
        with_ci(_metrics, y, p[:29], ["accuracy"], n_boot=5)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(lambda idx: 0.0, 10, alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(lambda idx: 0.0, 10, n_boot=0)


def test_regression_targets_are_not_stratified_by_value():
    ages = np.arange(20, 220)  # 1-D integer-valued target with 200 distinct values
    ci = with_ci(lambda y, p: {"mean": float(np.mean(y))}, ages, ages, ["mean"], n_boot=50, seed=0)
    assert ci["mean"][1] - ci["mean"][0] > 1.0  # stratifying by value would freeze every resample
    with pytest.raises(ValueError, match="y_true must be a 1-D"):
        with_ci(lambda y, p: {"m": 0.0}, np.ones((4, 2)), np.ones((4, 2)), ["m"], n_boot=2, stratify=True)
