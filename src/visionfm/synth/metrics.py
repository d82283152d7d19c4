"""Pure fidelity measures between a real and a synthetic set of feature vectors (numpy in, numbers out).

* Frechet distance (the FID formula) between Gaussians fitted to the two sets.
* Improved precision / recall (Kynkaenniemi et al., NeurIPS 2019): each set's manifold is the union of balls around
  its points with radius = distance to the point's k-th nearest neighbour in the same set; precision = share of
  synthetic points inside the real manifold, recall = share of real points inside the synthetic manifold.
* Nearest-neighbour memorisation: each synthetic point's closest training point, flagged when closer than a
  threshold taken from the training set's own leave-one-out nearest-neighbour distances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MemorisationResult",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_stats",
    "knn_radii",
    "memorisation_check",
    "nearest_neighbours",
    "pairwise_distances",
    "precision_recall",
]


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (unbiased) of ``x`` ``[N, D]``, float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {x.shape}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``.

    ``Tr((S1 S2)^(1/2))`` is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``), which avoids the complex parts a general ``sqrtm`` gives.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r1 = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    return max(fd, 0.0)  # rounding can give -1e-12 for identical sets


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to features ``a`` ``[N, D]`` and ``b`` ``[M, D]``."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def pairwise_distances(a: np.ndarray, b: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """``[N, M]`` distances between rows of ``a`` ``[N, D]`` and ``b`` ``[M, D]``.

    Args:
        metric: ``euclidean`` or ``cosine`` (1 - cosine similarity).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.clip(1.0 - a @ b.T, 0.0, 2.0)
    if metric != "euclidean":
        raise ValueError(f"metric {metric!r} not one of euclidean, cosine")
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def knn_radii(x: np.ndarray, k: int = 3, metric: str = "euclidean") -> np.ndarray:
    """Distance of each row of ``x`` ``[N, D]`` to its k-th nearest other row: ``[N]``."""
    if not 1 <= k < len(x):
        raise ValueError(f"k = {k} needs 1 <= k < number of points ({len(x)})")
    d = pairwise_distances(x, x, metric)
    np.fill_diagonal(d, np.inf)  # a point is not its own neighbour
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _coverage(query: np.ndarray, ref: np.ndarray, radii: np.ndarray, metric: str) -> float:
    inside = pairwise_distances(query, ref, metric) <= radii[None, :]
    return float(inside.any(1).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, metric: str = "euclidean") -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of ``fake`` ``[M, D]`` against ``real`` ``[N, D]``.

    Returns:
        (precision, recall), each in [0, 1].
    """
    precision = _coverage(fake, real, knn_radii(real, k, metric), metric)
    recall = _coverage(real, fake, knn_radii(fake, k, metric), metric)
    return precision, recall


def nearest_neighbours(
    query: np.ndarray, ref: np.ndarray, metric: str = "cosine", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Index ``[M]`` and distance ``[M]`` of each query row's nearest row of ``ref`` (computed in chunks)."""
    idx, dist = [], []
    for s in range(0, len(query), chunk):
        d = pairwise_distances(query[s : s + chunk], ref, metric)
        i = d.argmin(1)
        idx.append(i)
        dist.append(d[np.arange(len(i)), i])
    return np.concatenate(idx), np.concatenate(dist)


@dataclass
class MemorisationResult:
    """Nearest training point of every synthetic point.

    Attributes:
        index: ``[M]`` row of the nearest training point.
        distance: ``[M]`` its distance.
        threshold: distances below this are flagged.
        flagged: ``[M]`` bool.
        train_nn: ``[N]`` leave-one-out nearest-neighbour distances inside the training set (the reference scale).
    """

    index: np.ndarray
    distance: np.ndarray
    threshold: float
    flagged: np.ndarray
    train_nn: np.ndarray

    @property
    def flagged_fraction(self) -> float:
        return float(self.flagged.mean()) if len(self.flagged) else 0.0


def memorisation_check(
    synthetic: np.ndarray,
    train: np.ndarray,
    metric: str = "cosine",
    quantile: float = 0.05,
    threshold: float | None = None,
) -> MemorisationResult:
    """Flag synthetic points that sit as close or closer to a training point than training points sit to each other.

    Args:
        synthetic: ``[M, D]``.
        train: ``[N, D]`` (N >= 2).
        quantile: without ``threshold``, the threshold is this quantile of the training set's leave-one-out
            nearest-neighbour distances (a copy of a training image is closer than almost any two real images).
        threshold: an absolute distance threshold instead.
    """
    if len(train) < 2:
        raise ValueError("the memorisation check needs at least 2 training points")
    train_nn = knn_radii(train, 1, metric)
    thr = float(threshold) if threshold is not None else float(np.quantile(train_nn, quantile))
    idx, dist = nearest_neighbours(synthetic, train, metric)
    return MemorisationResult(idx, dist, thr, dist <= thr, train_nn)
