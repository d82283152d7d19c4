"""Fidelity measures against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visionfm.synth.metrics import (
    frechet_distance,
    frechet_distance_features,
    knn_radii,
    memorisation_check,
    nearest_neighbours,
    pairwise_distances,
    precision_recall,
)


def test_fd_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5))
    mu, s = a.mean(0), np.cov(a, rowvar=False)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fd_closed_form_1d():
    # (m1 - m2)^2 + s1^2 + s2^2 - 2 s1 s2 = (1 - 4)^2 + (2 - 3)^2 = 10
    assert frechet_distance([1.0], [[4.0]], [4.0], [[9.0]]) == pytest.approx(10.0)


def test_fd_diagonal_and_translation():
    # diagonal covariances: sum (dmu)^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = (1 + 4) + (1 + 0) = 6
    fd = frechet_distance([0, 0], np.diag([1.0, 4.0]), [1, 2], np.diag([4.0, 4.0]))
    assert fd == pytest.approx(6.0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    assert frechet_distance_features(x, x + [3, 0, 4]) == pytest.approx(25.0)  # a pure shift costs |shift|^2


def test_fd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        frechet_distance([0, 0], np.eye(2), [0], np.eye(1))


def test_pairwise_and_knn_radii():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert pairwise_distances(x, x)[0].tolist() == [0, 1, 3, 7]
    assert knn_radii(x, 1).tolist() == [1, 1, 2, 4]
    assert knn_radii(x, 2).tolist() == [3, 2, 3, 6]
    c = pairwise_distances(np.array([[1.0, 0]]), np.array([[0.0, 2], [3.0, 0], [-1, 0]]), "cosine")
    assert c[0].tolist() == pytest.approx([1.0, 0.0, 2.0])
    with pytest.raises(ValueError):
        knn_radii(x, 4)


def test_precision_recall_hand_example():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii: 1, 1, 1, 1
    fake = np.array([[0.5], [10.0]])  # radii 9.5, 9.5 -> every real point inside
    p, r = precision_recall(real, fake, k=1)
    assert (p, r) == (0.5, 1.0)
    fake2 = np.array([[0.0], [0.2]])  # radius 0.2 each: covers real 0 only
    assert precision_recall(real, fake2, k=1) == (1.0, 0.25)
    assert precision_recall(real, real, k=2) == (1.0, 1.0)


def test_nearest_neighbours_chunked():
    ref = np.array([[0.0, 0], [10, 0], [0, 10]])
    q = np.array([[9.0, 1], [1, 1], [0, 8]])
    idx, d = nearest_neighbours(q, ref, "euclidean", chunk=2)
    assert idx.tolist() == [1, 0, 2]
    assert d.tolist() == pytest.approx([math.sqrt(2), math.sqrt(2), 2.0])


def test_memorisation_flags_copies_only():
    train = np.array([[0.0], [10.0], [20.0], [30.0]])  # leave-one-out NN distances all 10
    syn = np.array([[10.0], [15.0], [24.0], [31.5]])
    m = memorisation_check(syn, train, "euclidean", quantile=0.5)
    assert m.threshold == 10.0
    assert m.index.tolist() == [1, 1, 2, 3] and m.distance.tolist() == [0, 5, 4, 1.5]
    assert m.flagged.tolist() == [True, True, True, True]
    m = memorisation_check(syn, train, "euclidean", threshold=2.0)
    assert m.flagged.tolist() == [True, False, False, True] and m.flagged_fraction == 0.5
    with pytest.raises(ValueError):
        memorisation_check(syn, train[:1])
