"""Splits, k-shot draws and metrics on the real RetinaMNIST label distribution (DR grades 0-4, imbalanced)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from tests.helpers import DATA, require
from visionfm.evaluation import classification_metrics, kshot_draws, stratified_kfold, stratified_split, with_ci

GRADES = ["grade0", "grade1", "grade2", "grade3", "grade4"]


@pytest.fixture(scope="module")
def retina() -> dict[str, np.ndarray]:
    with np.load(require(DATA / "retinamnist" / "retinamnist.npz")) as npz:
        return {k: npz[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}


def test_stratified_split_on_real_labels(retina):
    y = retina["train_labels"][:, 0].astype(np.int64)
    assert np.bincount(y).tolist() == [486, 128, 206, 194, 66]  # the counts in DATASET_NOTES.md
    tr, va = stratified_split(y, 0.1, seed=0)
    assert len(va) == 108 and len(tr) == 972 and not np.intersect1d(tr, va).size
    counts = np.bincount(y, minlength=5)
    assert np.all(np.abs(np.bincount(y[va], minlength=5) - 0.1 * counts) < 1)


def test_kshot_draws_on_real_labels(retina):
    y = retina["train_labels"][:, 0]
    for k in (1, 5, 10):
        draws = kshot_draws(y, k, n_draws=5, seed=0)
        assert all(np.bincount(y[d], minlength=5).tolist() == [k] * 5 for d in draws)
        assert len({tuple(d) for d in draws}) == 5
        assert all(np.array_equal(a, b) for a, b in zip(draws, kshot_draws(y, k, n_draws=5, seed=0)))
    with pytest.raises(ValueError, match="class 4 has 66 samples"):
        kshot_draws(y, 100, n_draws=1, seed=0)


def test_kfold_on_real_labels(retina):
    y = retina["test_labels"][:, 0]
    folds = stratified_kfold(y, 5, seed=0)
    assert np.array_equal(np.sort(np.concatenate([te for _, te in folds])), np.arange(400))
    for _, te in folds:
        assert np.all(np.abs(np.bincount(y[te], minlength=5) - np.bincount(y, minlength=5) / 5) <= 1)


def test_metrics_of_a_pixel_probe_on_real_images(retina):
    def pool(images: np.ndarray) -> np.ndarray:  # [N, 28, 28, 3] -> [N, 7*7*3] mean-pooled pixels in [0, 1]
        return images.reshape(len(images), 7, 4, 7, 4, 3).mean(axis=(2, 4)).reshape(len(images), -1) / 255.0

    y_tr, y_te = retina["train_labels"][:, 0], retina["test_labels"][:, 0]
    probe = LogisticRegression(max_iter=300).fit(pool(retina["train_images"]), y_tr)
    probs = probe.predict_proba(pool(retina["test_images"]))
    m = classification_metrics(y_te, probs, GRADES, ordinal=True)
    assert m["n"] == 400 and np.sum(m["confusion_matrix"]) == 400
    assert m["auroc"]["macro"] == pytest.approx(roc_auc_score(y_te, probs, multi_class="ovr"))
    assert m["kappa_quadratic"] == pytest.approx(cohen_kappa_score(y_te, probs.argmax(1), weights="quadratic"))
    assert 0.55 < m["auroc"]["macro"] < 0.95  # pixels carry some grade signal, far from perfect
    ci = with_ci(
        lambda y, p: classification_metrics(y, p, GRADES, ordinal=True),
        y_te,
        probs,
        ["auroc.macro", "kappa_quadratic"],
        n_boot=100,
        seed=0,
    )
    assert ci["auroc.macro"][0] < m["auroc"]["macro"] < ci["auroc.macro"][1]
    assert ci["kappa_quadratic"][0] < m["kappa_quadratic"] < ci["kappa_quadratic"][1]
