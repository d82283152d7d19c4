"""Seeded splits: stratification, reproducibility, patient grouping, k-shot draws and k-fold."""

from __future__ import annotations

import numpy as np
import pytest

from visionfm.evaluation import kshot_draws, kshot_indices, stratified_kfold, stratified_split


def _labels() -> np.ndarray:
    return np.repeat(np.arange(4), [40, 20, 10, 3])


def test_stratified_split_proportions_and_partition():
    y = _labels()
    tr, va = stratified_split(y, 0.2, seed=0)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(y)))
    assert len(np.intersect1d(tr, va)) == 0
    # largest-remainder quotas: 40*0.2=8, 20*0.2=4, 10*0.2=2, 3*0.2=0.6 -> total round(14.6)=15 -> +1 for class 3
    assert np.bincount(y[va], minlength=4).tolist() == [8, 4, 2, 1]
    assert len(va) == round(0.2 * len(y))


def test_stratified_split_reproducible_and_seed_dependent():
    y = _labels()
    a = stratified_split(y, 0.25, seed=3)
    b = stratified_split(y, 0.25, seed=3)
    c = stratified_split(y, 0.25, seed=4)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_singleton_class_stays_in_training():
    y = np.array([0] * 10 + [1])
    tr, va = stratified_split(y, 0.3, seed=0)
    assert 10 in tr and 10 not in va


def test_grouped_split_never_shares_a_patient():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 3)  # 60 patients, 3 images each
    y = np.repeat(rng.integers(0, 3, size=60), 3)
    for seed in range(5):
        tr, va = stratified_split(y, 0.2, seed=seed, groups=groups)
        assert not set(groups[tr]) & set(groups[va])
        assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(y)))
        assert 0.1 < len(va) / len(y) < 0.3
        assert set(y[va]) == {0, 1, 2}


def test_kshot_exactly_k_per_class_and_reproducible():
    y = _labels()
    idx = kshot_indices(y, 3, seed=1)
    assert np.bincount(y[idx]).tolist() == [3, 3, 3, 3]
    assert len(set(idx.tolist())) == len(idx)
    assert np.array_equal(idx, kshot_indices(y, 3, seed=1))
    assert not np.array_equal(kshot_indices(y, 3, seed=1), kshot_indices(y, 3, seed=2))


def test_kshot_draws_differ_reproducible_and_prefix_stable():
    y = _labels()
    draws = kshot_draws(y, 2, n_draws=5, seed=7)
    assert len(draws) == 5
    assert all(np.bincount(y[d]).tolist() == [2, 2, 2, 2] for d in draws)
    assert len({tuple(d.tolist()) for d in draws}) == 5
    again = kshot_draws(y, 2, n_draws=3, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(draws[:3], again))


def test_kshot_error_names_the_short_class():
    with pytest.raises(ValueError, match="class 3 has 3 samples.*k=5"):
        kshot_indices(_labels(), 5, seed=0)
    with pytest.raises(ValueError, match="class 4 has 0 samples"):
        kshot_indices(_labels(), 1, seed=0, n_classes=5)


def test_stratified_kfold_partitions_and_stratifies():
    y = _labels()
    folds = stratified_kfold(y, 3, seed=0)
    tests = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tests), np.arange(len(y)))
    for tr, te in folds:
        assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(y)
        assert abs(np.sum(y[te] == 0) - 40 / 3) <= 1
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, stratified_kfold(y, 3, seed=0)))


def test_grouped_kfold_never_shares_a_patient():
    groups = np.repeat(np.arange(30), 2)
    y = np.repeat(np.arange(30) % 2, 2)
    for tr, te in stratified_kfold(y, 5, seed=1, groups=groups):
        assert not set(groups[tr]) & set(groups[te])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": np.array([0, 1, np.nan, 1])}, "labels contains NaN"),
        ({"labels": np.array([0, -1, 1, 1])}, "labels contains negative"),
        ({"labels": np.zeros((3, 2))}, "labels must be a 1-D"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"seed": -1}, "seed"),
        ({"groups": np.arange(3)}, "groups must be"),
    ],
)
def test_stratified_split_bad_input(kwargs, match):
    args = {"labels": np.array([0, 1] * 10), "val_fraction": 0.2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        stratified_split(**args)


def test_kfold_bad_input():
    with pytest.raises(ValueError, match="n_folds"):
        stratified_kfold(np.array([0, 1] * 5), 1, seed=0)
    with pytest.raises(ValueError, match="number of groups"):
        stratified_kfold(np.array([0, 1] * 5), 3, seed=0, groups=np.array([0, 1] * 5))
